//! Pull directories end to end: each connector's vendor-faithful fake server pulled
//! by directory-sync over real HTTP, reconciled through policy and membership over
//! real gRPC into members with the right roles; changes, removals, throttling, empty
//! and failed listings, and the pull lease across two replicas. Waits are on the
//! thing itself (members, runs, status), never on a clock; the connectors wait
//! through a manual clock, so throttling costs no time.

use std::future::Future;
use std::sync::Arc;

use muster_connector::ManualClock;
use muster_connector::conformance::{Failure, FakeDeployment, FakeDirectory};
use muster_proto::directory::v1 as dpb;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use muster_runtime::client::MembershipClient;
use muster_tests::{DbKind, DirectoryClient, TestCluster};

use super::support::{PATIENCE, admin, named, person, until};
use serde_json::{Value, json};

/// The whole pull story of every connector, on both databases: one line per
/// connector, naming the function that starts its fake and points a directory
/// config at it (`FakeDeployment`). A new connector adds its line here.
macro_rules! pull_stories {
    ($($name:ident => $deployment:path;)*) => {
        $(
            mod $name {
                use muster_tests::DbKind;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::pull_story(DbKind::Sqlite, $deployment).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if muster_tests::postgres_available() {
                        super::pull_story(DbKind::Postgres, $deployment).await;
                    }
                }
            }
        )*
    };
}

pull_stories! {
    okta_pull_provisions_changes_and_survives_failures => crate::support::okta;
    entra_pull_provisions_changes_and_survives_failures => crate::support::entra;
    google_pull_provisions_changes_and_survives_failures => crate::support::google;
    entra_app_scope_pull_provisions_changes_and_survives_failures => crate::support::entra_app;
    example_pull_provisions_changes_and_survives_failures => muster_connector_example::testing::deployment;
}

on_both_databases! {
    test_directory_says_what_is_wrong => test_directory;
    entra_token_outlives_pulls_and_a_resync_says_so => entra_token_and_resync;
}

/// A cluster whose connectors wait through a manual clock, a parent with one
/// Enterprise org in scim mode with advanced group mapping, and a pull directory.
struct World {
    cluster: TestCluster,
    membership: MembershipClient,
    directory: DirectoryClient,
    org_id: String,
    parent_id: String,
    dir_id: String,
}

impl World {
    async fn start(kind: DbKind, fake: &FakeDeployment, clock: Arc<ManualClock>) -> Self {
        let mut cluster = TestCluster::start(kind).await;
        cluster.stop_directory().await;
        cluster.connector_clock = Some(clock.clone());
        cluster.start_directory().await;
        let (parent_id, org_id) = cluster
            .enterprise_org(ppb::SettingsInput {
                mode: ppb::ProvisioningMode::Scim as i32,
                advanced_group_mapping: true,
                role_mappings: vec![
                    ppb::RoleMapping { role: "Owner".into(), groups: vec![named("owners")] },
                    ppb::RoleMapping { role: "Admin".into(), groups: vec![named("admins")] },
                    ppb::RoleMapping { role: "User".into(), groups: vec![named("everyone")] },
                ],
                seat_tier_mappings: vec![],
            })
            .await;
        let mut directory = cluster.directory();
        let created = directory
            .create_directory(dpb::CreateDirectoryRequest {
                parent_id: parent_id.clone(),
                // By name: a connector added since the enum has no value in it.
                kind_name: fake.kind.into(),
                display_name: "IdP".into(),
                config_json: fake.config.to_string(),
                sync_interval_seconds: 300,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let dir = created.directory.unwrap();
        // The kind reads back by name, and by enum value exactly when the registry gives it one.
        let kinds = directory.list_directory_kinds(dpb::ListDirectoryKindsRequest {}).await.unwrap().into_inner();
        let registered = kinds.kinds.iter().find(|k| k.name == fake.kind).expect("the kind is registered");
        assert_eq!((dir.kind_name.as_str(), dir.kind), (fake.kind, registered.kind));
        let dir_id = dir.id;
        let membership = cluster.membership();
        Self { cluster, membership, directory, org_id, parent_id, dir_id }
    }

    async fn members(&self) -> Vec<mpb::Member> {
        let page = self
            .membership
            .clone()
            .list_members(mpb::ListMembersRequest {
                org_id: self.org_id.clone(),
                page_size: 1000,
                page_token: String::new(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        page.members
    }

    /// (email, role) of every member, sorted.
    async fn roles(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            self.members().await.into_iter().map(|m| (m.user.map(|u| u.email).unwrap_or_default(), m.role)).collect();
        out.sort();
        out
    }

    async fn until_roles(&self, want: &[(&str, &str)]) {
        let want: Vec<(String, String)> =
            want.iter().map(|(e, r)| (format!("{e}@example.com"), r.to_string())).collect();
        let waited = tokio::time::timeout(PATIENCE, async {
            while self.roles().await != want {
                tokio::task::yield_now().await;
            }
        })
        .await;
        if waited.is_err() {
            let status = self.status().await;
            panic!("gave up waiting for members {want:?}; have {:?}; status {status:?}", self.roles().await);
        }
    }

    async fn status(&self) -> dpb::DirectoryStatus {
        self.directory
            .clone()
            .get_directory_status(dpb::GetDirectoryStatusRequest { id: self.dir_id.clone() })
            .await
            .unwrap()
            .into_inner()
    }

    async fn sync_now(&self) -> dpb::SyncRun {
        let mut stream = self
            .directory
            .clone()
            .sync_now(dpb::SyncNowRequest { directory_id: self.dir_id.clone(), wait: true, actor: admin() })
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
        last.expect("a final run")
    }
}

/// The whole story for one connector: full sync with roles, changes and removals,
/// throttling, and empty and failed listings that remove nobody.
async fn pull_story<F, Fut>(kind: DbKind, deployment: F)
where
    F: FnOnce(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = FakeDeployment>,
{
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let fake = deployment(clock.clone()).await;
    let f = fake.fake.clone();
    let owners = f.create_group("owners");
    let admins = f.create_group("admins");
    let everyone = f.create_group("everyone");
    let ann = f.create_user(&person("ann"));
    let bob = f.create_user(&person("bob"));
    let cid = f.create_user(&person("cid"));
    f.add_member(&owners, &ann);
    f.add_member(&admins, &cid);
    for u in [&ann, &bob, &cid] {
        f.add_member(&everyone, u);
    }
    let w = World::start(kind, &fake, clock.clone()).await;

    // A full sync provisions everyone with the role their groups map to.
    w.until_roles(&[("ann", "Owner"), ("bob", "User"), ("cid", "Admin")]).await;
    let status = w.status().await;
    assert_eq!(status.users, 3, "{status:?}");
    let runs = w
        .directory
        .clone()
        .list_sync_runs(dpb::ListSyncRunsRequest {
            directory_id: w.dir_id.clone(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(runs.iter().any(|r| r.trigger == dpb::RunTrigger::Interval as i32), "{runs:?}");

    // Changes: cid becomes an owner, bob leaves every group (no mapped group: removed).
    f.add_member(&owners, &cid);
    f.remove_member(&everyone, &bob);
    w.until_roles(&[("ann", "Owner"), ("cid", "Owner")]).await;
    // A deleted user is removed.
    let dan = f.create_user(&person("dan"));
    f.add_member(&everyone, &dan);
    w.until_roles(&[("ann", "Owner"), ("cid", "Owner"), ("dan", "User")]).await;
    f.delete_user(&dan);
    w.until_roles(&[("ann", "Owner"), ("cid", "Owner")]).await;

    // Throttling: the vendor's 429 (Google's rate-limit 403) is waited out, through the clock.
    let waits_before = clock.sleeps().len();
    f.fail_next(&[Failure::RateLimited, Failure::RateLimited]);
    let eve = f.create_user(&person("eve"));
    f.add_member(&everyone, &eve);
    w.until_roles(&[("ann", "Owner"), ("cid", "Owner"), ("eve", "User")]).await;
    assert!(clock.sleeps().len() > waits_before, "the throttling was waited out through the clock");

    // An empty listing (a wrong scope looks like this) removes nobody.
    f.set_hidden(true);
    let run = w.sync_now().await;
    assert_eq!(run.state, dpb::RunState::Failed as i32, "{run:?}");
    assert!(run.error.contains("no users"), "{}", run.error);
    let status = w.status().await;
    assert!(status.last_error.contains("no users"), "{status:?}");
    assert_eq!(w.roles().await.len(), 3);
    f.set_hidden(false);

    // A listing that fails midway (the IdP goes down) removes nobody either.
    // A partial listing swept at its end would remove everyone it did not reach.
    f.fail_after(1, Failure::ServerError);
    let run = w.sync_now().await;
    assert_eq!(run.state, dpb::RunState::Failed as i32, "{run:?}");
    assert!(!run.error.is_empty());
    assert_eq!(w.roles().await.len(), 3, "a failed listing removed someone");
    f.clear_failures();
    f.remove_member(&everyone, &eve);

    // The IdP is back: Sync now does a full listing, and eve (no mapped group) leaves.
    let run = w.sync_now().await;
    assert_eq!(run.state, dpb::RunState::Succeeded as i32, "{run:?}");
    assert!(run.outcome.contains("full listing"), "{}", run.outcome);
    w.until_roles(&[("ann", "Owner"), ("cid", "Owner")]).await;
    until("the error to clear", || async { w.status().await.last_error.is_empty() }).await;
    w.cluster.stop().await;
}

// Replicas share a database only on PostgreSQL (a SQLite file belongs to one process).
mod one_replica_pulls_a_directory_at_a_time {
    use muster_tests::DbKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if muster_tests::postgres_available() {
            super::lease(DbKind::Postgres).await;
        }
    }
}

/// Two directory-sync replicas on one database: pull runs of a directory never
/// overlap, and when the replica that pulls stops, the other continues.
async fn lease(kind: DbKind) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let fake = crate::support::okta(clock.clone()).await;
    let f = fake.fake.clone();
    let everyone = f.create_group("everyone");
    let ann = f.create_user(&person("ann"));
    f.add_member(&everyone, &ann);
    let mut w = World::start(kind, &fake, clock.clone()).await;
    let replica = w.cluster.start_directory_replica().await;
    w.until_roles(&[("ann", "User")]).await;

    let runs = |d: DirectoryClient, dir: String| async move {
        d.clone()
            .list_sync_runs(dpb::ListSyncRunsRequest { directory_id: dir, page_size: 1000, page_token: String::new() })
            .await
            .unwrap()
            .into_inner()
            .runs
    };
    // Let both replicas pull a while.
    until("pulls by both replicas' loops", || {
        let (d, dir) = (w.directory.clone(), w.dir_id.clone());
        async move { runs(d, dir).await.iter().filter(|r| r.trigger == dpb::RunTrigger::Interval as i32).count() >= 20 }
    })
    .await;
    let all = runs(w.directory.clone(), w.dir_id.clone()).await;
    let mut spans: Vec<(i64, i64, String)> = all
        .iter()
        .filter(|r| r.trigger == dpb::RunTrigger::Interval as i32 && r.end_time.is_some())
        .map(|r| {
            let s = r.start_time.unwrap();
            let e = r.end_time.unwrap();
            (
                s.seconds * 1_000_000_000 + i64::from(s.nanos),
                e.seconds * 1_000_000_000 + i64::from(e.nanos),
                r.id.clone(),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two pull runs overlapped: {:?} and {:?}", pair[0], pair[1]);
    }

    // The replica stops: the first instance continues (its next runs name it).
    w.cluster.stop_directory().await;
    let bob = f.create_user(&person("bob"));
    f.add_member(&everyone, &bob);
    let replica_client = DirectoryClient::new(w.cluster.channel(&replica.url));
    let membership = w.membership.clone();
    let org = w.org_id.clone();
    until("the other replica to continue from the stored cursor", || {
        let (mut m, org) = (membership.clone(), org.clone());
        async move {
            let page = m
                .list_members(mpb::ListMembersRequest { org_id: org, page_size: 100, ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            page.members.len() == 2
        }
    })
    .await;
    let after = runs(replica_client, w.dir_id.clone()).await;
    let latest = after.iter().find(|r| r.state == dpb::RunState::Succeeded as i32).unwrap();
    assert!(latest.outcome.contains("changes"), "resumed from the cursor, not a new listing: {}", latest.outcome);
    replica.stop().await.unwrap();
    w.cluster.start_directory().await;
    w.cluster.stop().await;
}

/// `TestDirectory` (`muster directory test`) runs the connector's check against the
/// IdP and names the problem: a rejected token, an app id the IdP does not know.
async fn test_directory(kind: DbKind) {
    use muster_connector_okta::testing::APP_ID;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let fake = crate::support::okta(clock.clone()).await;
    let w = World::start(kind, &fake, clock).await;
    let mut d = w.directory.clone();
    let check = |id: String| {
        let mut d = d.clone();
        async move { d.test_directory(dpb::TestDirectoryRequest { id }).await.unwrap().into_inner() }
    };
    let ok = check(w.dir_id.clone()).await;
    assert!(ok.ok, "{ok:?}");

    let secrets = tempfile::tempdir().unwrap();
    let wrong = secrets.path().join("wrong-token");
    std::fs::write(&wrong, "00not-the-token").unwrap();
    let create = |config: Value| {
        let mut d = d.clone();
        let parent = w.parent_id.clone();
        async move {
            d.create_directory(dpb::CreateDirectoryRequest {
                parent_id: parent,
                kind_name: fake.kind.into(),
                display_name: "Broken IdP".into(),
                config_json: config.to_string(),
                sync_interval_seconds: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .directory
            .unwrap()
            .id
        }
    };
    let mut bad_token = fake.config.clone();
    bad_token["auth"]["token"] = json!({"file": wrong.to_string_lossy()});
    let bad = check(create(bad_token).await).await;
    assert_eq!((bad.ok, bad.problem.as_str()), (false, "unauthorized"), "{bad:?}");
    assert!(!bad.message.contains("00not-the-token"), "the token never appears in the answer");

    let mut unknown_app = fake.config.clone();
    unknown_app["app_id"] = json!(format!("{APP_ID}-missing"));
    let missing = check(create(unknown_app).await).await;
    assert_eq!((missing.ok, missing.problem.as_str()), (false, "not_found"), "{missing:?}");
    assert!(missing.message.contains("missing"), "names the app: {}", missing.message);

    let err = d.test_directory(dpb::TestDirectoryRequest { id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    w.cluster.stop().await;
}

/// The access token is fetched once and reused by the connectors of later pulls
/// (each pull builds its own), and a full listing forced by an expired delta token
/// says "resync" in its run's outcome.
async fn entra_token_and_resync(kind: DbKind) {
    use muster_connector_entra::testing::{CLIENT_ID, CLIENT_SECRET, EntraFake, TENANT};
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let entra = EntraFake::start(2).await;
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("entra-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let config = json!({
        "tenant_id": TENANT, "client_id": CLIENT_ID, "authority": entra.base, "graph_url": entra.base,
        "credential": {"type": "client_secret", "secret": {"file": secret}}
    });
    let fake = FakeDeployment { fake: Arc::new(entra.clone()), kind: "entra", config, keep: Box::new(secrets) };
    let everyone = entra.create_group("everyone");
    let ann = entra.create_user(&person("ann"));
    entra.add_member(&everyone, &ann);
    let w = World::start(kind, &fake, clock).await;
    w.until_roles(&[("ann", "User")]).await;
    let runs = || async {
        w.directory
            .clone()
            .list_sync_runs(dpb::ListSyncRunsRequest {
                directory_id: w.dir_id.clone(),
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .runs
    };
    let succeeded = |runs: &[dpb::SyncRun]| runs.iter().filter(|r| r.state == dpb::RunState::Succeeded as i32).count();
    until("several pulls", || async { succeeded(&runs().await) >= 3 }).await;
    assert_eq!(entra.token_requests(), 1, "one token for every pull: {:?}", entra.requests());

    entra.expire_cursors();
    until("a pull that resynced", || async { runs().await.iter().any(|r| r.outcome.contains("resync")) }).await;
    let resync = runs().await.into_iter().find(|r| r.outcome.contains("resync")).unwrap();
    assert!(resync.outcome.contains("full listing"), "{}", resync.outcome);
    assert_eq!(entra.token_requests(), 1);
    w.cluster.stop().await;
}
