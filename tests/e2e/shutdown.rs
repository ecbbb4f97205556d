//! A service stops when asked, even mid-pull with an IdP that hangs, and the pull
//! resumes at the next start: the stop is bounded by the grace, the interrupted run
//! says so, nobody is removed, and the next start reads the change feed from the
//! stored cursor instead of listing everything again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use muster_connector::ManualClock;
use muster_connector::conformance::FakeDirectory;
use muster_connector_okta::testing::{API_TOKEN, OktaFake};
use muster_proto::directory::v1 as dpb;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use muster_tests::{DbKind, TestCluster};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::support::{admin, named, person, until};

on_both_databases! {
    a_stop_mid_pull_with_a_hanging_idp_is_bounded_and_the_pull_resumes => stop_mid_pull;
}

/// A TCP proxy in front of the IdP fake that can hold every answer back: the IdP
/// hangs (requests arrive, nothing comes back), as a stuck gateway does.
struct HangingProxy {
    url: String,
    hang: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
}

impl HangingProxy {
    async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        // The fake writes its own origin into its paging links, and the connector
        // follows links of its configured origin only: the proxy puts its own in their
        // place, byte for byte, so it binds a port of the same width.
        let listener = loop {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            if l.local_addr().unwrap().to_string().len() == upstream.len() {
                break l;
            }
        };
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (theirs, ours) = (upstream.clone().into_bytes(), listener.local_addr().unwrap().to_string().into_bytes());
        let hang = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let (h, c) = (hang.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let (h, c, theirs, ours) = (h.clone(), c.clone(), theirs.clone(), ours.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if h.load(Ordering::SeqCst) {
                            c.fetch_add(1, Ordering::SeqCst);
                            while h.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                        let chunk = &mut buf[..n];
                        let mut i = 0;
                        while i + theirs.len() <= chunk.len() {
                            if chunk[i..i + theirs.len()] == theirs[..] {
                                chunk[i..i + theirs.len()].copy_from_slice(&ours);
                                i += theirs.len();
                            } else {
                                i += 1;
                            }
                        }
                        if cw.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, hang, held }
    }
}

async fn roles(membership: &mut muster_runtime::client::MembershipClient, org: &str) -> Vec<(String, String)> {
    let page = membership
        .list_members(mpb::ListMembersRequest { org_id: org.into(), page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut out: Vec<(String, String)> =
        page.members.into_iter().map(|m| (m.user.map(|u| u.email).unwrap_or_default(), m.role)).collect();
    out.sort();
    out
}

fn want(people: &[(&str, &str)]) -> Vec<(String, String)> {
    people.iter().map(|(e, r)| (format!("{e}@example.com"), r.to_string())).collect()
}

/// A cluster whose directory-sync pulls an Okta fake through a [`HangingProxy`]: a
/// parent with one scim + AGM org (admins -> Admin, everyone -> User), ann (an admin)
/// and bob in the IdP, and the Okta directory.
struct OktaWorld {
    cluster: TestCluster,
    okta: OktaFake,
    proxy: HangingProxy,
    everyone: String,
    org: String,
    dir: String,
    _secrets: tempfile::TempDir,
}

impl OktaWorld {
    /// With `replica` as directory-sync's replica name; with the IdP hanging from the
    /// start when `hang`.
    async fn start(kind: DbKind, replica: Option<&str>, hang: bool) -> Self {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let okta = OktaFake::start(2, false, clock.clone()).await;
        let proxy = HangingProxy::start(&okta.base).await;
        let secrets = tempfile::tempdir().unwrap();
        let token = secrets.path().join("okta-token");
        std::fs::write(&token, API_TOKEN).unwrap();
        let everyone = okta.create_group("everyone");
        let admins = okta.create_group("admins");
        let ann = okta.create_user(&person("ann"));
        let bob = okta.create_user(&person("bob"));
        for u in [&ann, &bob] {
            okta.add_member(&everyone, u);
        }
        okta.add_member(&admins, &ann);

        let mut cluster = TestCluster::start(kind).await;
        cluster.stop_directory().await;
        cluster.connector_clock = Some(clock);
        cluster.replica_name = replica.map(str::to_string);
        cluster.start_directory().await;
        let (parent, org) = cluster
            .enterprise_org(ppb::SettingsInput {
                mode: ppb::ProvisioningMode::Scim as i32,
                advanced_group_mapping: true,
                role_mappings: vec![
                    ppb::RoleMapping { role: "Admin".into(), groups: vec![named("admins")] },
                    ppb::RoleMapping { role: "User".into(), groups: vec![named("everyone")] },
                ],
                seat_tier_mappings: vec![],
            })
            .await;
        proxy.hang.store(hang, Ordering::SeqCst);
        let config = json!({"org_url": proxy.url, "page_size": 2,
                            "auth": {"type": "api_token", "token": {"file": token.to_string_lossy()}}});
        let dir = cluster
            .directory()
            .create_directory(dpb::CreateDirectoryRequest {
                parent_id: parent,
                kind: dpb::DirectoryKind::Okta as i32,
                display_name: "Okta".into(),
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
            .id;
        Self { cluster, okta, proxy, everyone, org, dir, _secrets: secrets }
    }

    async fn roles(&self) -> Vec<(String, String)> {
        roles(&mut self.cluster.membership(), &self.org).await
    }

    async fn until_roles(&self, people: &[(&str, &str)]) {
        let want = want(people);
        until("the members", || {
            let want = want.clone();
            async move { self.roles().await == want }
        })
        .await;
    }

    async fn runs(&self) -> Vec<dpb::SyncRun> {
        self.cluster
            .directory()
            .list_sync_runs(dpb::ListSyncRunsRequest {
                directory_id: self.dir.clone(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .runs
    }
}

async fn stop_mid_pull(kind: DbKind) {
    let mut w = OktaWorld::start(kind, None, false).await;
    w.until_roles(&[("ann", "Admin"), ("bob", "User")]).await;

    // A change waits in the System Log; then the IdP hangs, mid-pull.
    let cid = w.okta.create_user(&person("cid"));
    w.okta.add_member(&w.everyone, &cid);
    w.proxy.hang.store(true, Ordering::SeqCst);
    until("a pull to be stuck on the hanging IdP", || async { w.proxy.held.load(Ordering::SeqCst) > 0 }).await;

    // The stop cancels the pull, well within the grace (5 s in tests), whatever the
    // IdP does; it is not merely abandoned when the grace runs out. Before, it waited
    // for the request's own timeout and every retry after it.
    let stopped = tokio::time::timeout(Duration::from_secs(4), w.cluster.stop_directory()).await;
    assert!(stopped.is_ok(), "directory-sync did not stop promptly while a pull hung");

    // The IdP answers again; the next start resumes the change feed where it was.
    let before_restart = w.okta.requests().len();
    w.proxy.hang.store(false, Ordering::SeqCst);
    w.cluster.start_directory().await;
    w.until_roles(&[("ann", "Admin"), ("bob", "User"), ("cid", "User")]).await;
    let after: Vec<String> = w.okta.requests()[before_restart..].to_vec();
    let first_data = after.iter().find(|r| r.contains("/api/v1/")).expect("a request after the restart");
    assert!(
        first_data.contains("/api/v1/logs"),
        "the restart read the change feed from the stored cursor, not a full listing: {after:?}"
    );

    // The interrupted run says so, and removed nobody.
    let runs = w.runs().await;
    let interrupted = runs
        .iter()
        .find(|r| r.outcome.starts_with("interrupted"))
        .unwrap_or_else(|| panic!("no interrupted run: {:?}", runs.iter().map(|r| &r.outcome).collect::<Vec<_>>()));
    assert_eq!(interrupted.state, dpb::RunState::Failed as i32);
    assert_eq!(interrupted.counts.unwrap_or_default().removed, 0);
    let status = w
        .cluster
        .directory()
        .get_directory_status(dpb::GetDirectoryStatusRequest { id: w.dir.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(status.last_error.is_empty(), "a stop is not the IdP's failure: {}", status.last_error);
    w.cluster.stop().await;
}

on_both_databases! {
    a_replica_that_restarts_takes_over_what_its_last_process_left => restart_takes_over;
}

/// What a SIGKILLed replica leaves: a run marked running, and the pull lease, held
/// for minutes more. The same replica starting again takes both over at once: the run
/// says it was interrupted, and Sync now does not wait for the dead process's lease.
async fn restart_takes_over(kind: DbKind) {
    use diesel::prelude::*;
    use muster_directory_sync::store::schema::{pull_state, run_owners, sync_runs};
    let mut w = OktaWorld::start(kind, Some("r1"), false).await;
    w.until_roles(&[("ann", "Admin"), ("bob", "User")]).await;
    w.cluster.stop_directory().await;
    let (cluster, dir) = (&mut w.cluster, w.dir.clone());

    // The leftovers of a process of replica r1 killed mid-pull.
    let db_config = muster_runtime::config::DatabaseConfig {
        url: muster_runtime::Secret::new(cluster.directory_db_url()),
        max_connections: 1,
        allow_newer_schema: false,
    };
    let db = muster_runtime::Db::open(&db_config).await.unwrap();
    let (d, now) = (dir.clone(), chrono::Utc::now().naive_utc());
    db.run(move |conn| {
        diesel::insert_into(sync_runs::table)
            .values((
                sync_runs::id.eq("dead-run"),
                sync_runs::directory_id.eq(&d),
                sync_runs::run_trigger.eq("sync_now"),
                sync_runs::state.eq("running"),
                sync_runs::orgs_json.eq("[]"),
                sync_runs::outcome.eq("pulling"),
                sync_runs::error.eq(""),
                sync_runs::processed.eq(0i64),
                sync_runs::total.eq(0i64),
                sync_runs::actor.eq("admin:cli"),
                sync_runs::decided_by.eq(""),
                sync_runs::started_at.eq(now),
                sync_runs::heartbeat_at.eq(Some(now)),
                sync_runs::phase.eq("listing"),
            ))
            .execute(conn)?;
        diesel::insert_into(run_owners::table)
            .values((run_owners::run_id.eq("dead-run"), run_owners::owner.eq("r1#deadbeef")))
            .execute(conn)?;
        diesel::update(pull_state::table.find(&d))
            .set((
                pull_state::lease_holder.eq(Some("r1#deadbeef/0")),
                pull_state::lease_expires.eq(Some(now + chrono::Duration::minutes(30))),
            ))
            .execute(conn)
            .map_err(muster_runtime::DbError::Query)
    })
    .await
    .unwrap();

    cluster.start_directory().await;
    let mut directory = cluster.directory();
    let dead = directory.get_sync_run(dpb::GetSyncRunRequest { run_id: "dead-run".into() }).await.unwrap().into_inner();
    assert_eq!(dead.state, dpb::RunState::Failed as i32, "{dead:?}");
    // (On SQLite every run left running is the last process's, and says so first.)
    assert!(dead.outcome.starts_with("interrupted: "), "{}", dead.outcome);
    if kind == DbKind::Postgres {
        assert!(dead.outcome.starts_with("interrupted: its replica stopped and restarted"), "{}", dead.outcome);
    }

    // Sync now does not wait 30 minutes for the dead process's lease.
    let mut stream = directory
        .sync_now(dpb::SyncNowRequest { directory_id: dir.clone(), wait: true, actor: admin() })
        .await
        .unwrap()
        .into_inner();
    let finished = tokio::time::timeout(Duration::from_secs(30), async {
        let mut last = None;
        while let Some(p) = stream.message().await.unwrap() {
            last = p.run;
            if p.done {
                break;
            }
        }
        last.unwrap()
    })
    .await
    .expect("Sync now waited for the dead process's lease");
    assert_eq!(finished.state, dpb::RunState::Succeeded as i32, "{finished:?}");

    // Two live processes may not share a name (PostgreSQL proves it with a session lock).
    if kind == DbKind::Postgres {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = muster_directory_sync::run(
            cluster.directory_config(),
            muster_directory_sync::Listeners { grpc, http },
            async {},
            muster_runtime::metrics::RpcMetrics::new(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("another directory-sync is running as replica \"r1\"") && err.contains("replica_name"),
            "{err}"
        );
    }
    w.cluster.stop().await;
}

on_both_databases! {
    a_second_sync_now_joins_the_running_one => sync_now_joins;
}

/// "Sync now" twice while the first still runs (its IdP hangs): one run, which both
/// callers follow to its end. Repeated clicks cannot pile up full runs.
async fn sync_now_joins(kind: DbKind) {
    let w = OktaWorld::start(kind, None, true).await;
    let (proxy, dir) = (&w.proxy, w.dir.clone());
    let mut directory = w.cluster.directory();
    let start = |directory: &mut muster_tests::DirectoryClient| {
        let mut d = directory.clone();
        let dir = dir.clone();
        async move {
            d.sync_now(dpb::SyncNowRequest { directory_id: dir, wait: false, actor: admin() })
                .await
                .unwrap()
                .into_inner()
                .message()
                .await
                .unwrap()
                .unwrap()
                .run
                .unwrap()
        }
    };
    let first = start(&mut directory).await;
    let second = start(&mut directory).await;
    assert_eq!(first.id, second.id, "the second Sync now joined the first");
    proxy.hang.store(false, Ordering::SeqCst);
    until("the joined run to end", || {
        let mut d = directory.clone();
        let id = first.id.clone();
        async move {
            let r = d.get_sync_run(dpb::GetSyncRunRequest { run_id: id }).await.unwrap().into_inner();
            r.state == dpb::RunState::Succeeded as i32
        }
    })
    .await;
    // Once it ended, Sync now starts a new run.
    let third = start(&mut directory).await;
    assert_ne!(third.id, first.id);
    w.cluster.stop().await;
}
