//! The reconcile rules as a property: for random directories, settings and orders of
//! events, the members of an org after any sequence of SCIM pushes, Okta changes
//! (pulled by the interval loop through Okta's change feed), and Sync nows of either
//! directory equal the members a parent built from scratch from the final
//! directories gets. Order of events, which directory told first, and which run
//! handled what must not matter.
//!
//! Each case runs a real cluster (about a second or two). `MUSTER_PROPERTY_CASES`
//! sets the number of cases (defaults: 8 on SQLite, 4 on PostgreSQL); a failure
//! shrinks to a small sequence of events and prints it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use muster_connector::ManualClock;
use muster_connector::conformance::{FakeDirectory, FakeUser};
use muster_proto::directory::v1 as dpb;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use muster_tests::{DbKind, TestCluster};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::support::{PATIENCE, Scim, admin, named};

const PEOPLE: usize = 6;
const GROUPS: [&str; 3] = ["admins", "everyone", "engineering"];

/// What happens to one person in one directory.
#[derive(Clone, Debug)]
enum Change {
    /// Created (or, if there, set active or not).
    Upsert { active: bool },
    /// Deleted.
    Delete,
    /// Put into a group (when they exist).
    Join(usize),
    /// Taken out of a group.
    Leave(usize),
}

/// One event.
#[derive(Clone, Debug)]
enum Event {
    /// A SCIM push about person `p`.
    Scim(usize, Change),
    /// An Okta change about person `p` (the interval loop pulls it).
    Okta(usize, Change),
    /// Sync now of the SCIM (false) or Okta (true) directory.
    SyncNow(bool),
    /// Wait for everything so far to be reconciled.
    Settle,
}

#[derive(Clone, Debug)]
struct Case {
    /// Advanced group mapping (admins -> Admin, everyone -> User) or plain scim.
    agm: bool,
    /// The SCIM directory made authoritative.
    scim_authoritative: bool,
    events: Vec<Event>,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => any::<bool>().prop_map(|active| Change::Upsert { active }),
        1 => Just(Change::Delete),
        3 => (0..GROUPS.len()).prop_map(Change::Join),
        1 => (0..GROUPS.len()).prop_map(Change::Leave),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0..PEOPLE, change()).prop_map(|(p, c)| Event::Scim(p, c)),
        4 => (0..PEOPLE, change()).prop_map(|(p, c)| Event::Okta(p, c)),
        1 => any::<bool>().prop_map(Event::SyncNow),
        1 => Just(Event::Settle),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (any::<bool>(), any::<bool>(), proptest::collection::vec(event(), 4..24))
        .prop_map(|(agm, scim_authoritative, events)| Case { agm, scim_authoritative, events })
}

fn email(p: usize) -> String {
    format!("p{p}@example.com")
}

fn okta_user(p: usize, active: bool) -> FakeUser {
    FakeUser { user_name: email(p), given_name: format!("P{p}"), family_name: "Doe".into(), active }
}

/// The SCIM side as the test knows it, to rebuild it elsewhere at the end.
#[derive(Default)]
struct ScimModel {
    /// Person -> (SCIM id, active).
    users: BTreeMap<usize, (String, bool)>,
    /// Group -> (SCIM id, members).
    groups: BTreeMap<usize, (String, BTreeSet<usize>)>,
}

/// The Okta side: the fake holds the truth, this holds its ids.
#[derive(Default)]
struct OktaModel {
    users: BTreeMap<usize, String>,
    groups: BTreeMap<usize, String>,
}

/// One parent of the cluster: an org and its two directories.
struct Side {
    org: String,
    scim_dir: String,
    okta_dir: String,
    scim: Scim,
}

async fn side(cluster: &TestCluster, case: &Case, okta_config: &serde_json::Value) -> Side {
    let settings = ppb::SettingsInput {
        mode: ppb::ProvisioningMode::Scim as i32,
        advanced_group_mapping: case.agm,
        role_mappings: if case.agm {
            vec![
                ppb::RoleMapping { role: "Admin".into(), groups: vec![named("admins")] },
                ppb::RoleMapping { role: "User".into(), groups: vec![named("everyone")] },
            ]
        } else {
            vec![]
        },
        seat_tier_mappings: vec![],
    };
    let (parent, org) = cluster.enterprise_org(settings).await;
    let mut d = cluster.directory();
    // The brake at 100% never holds: the property is about who, not how many at once.
    let brake = Some(dpb::BrakeSettings { max_removal_percent: Some(100), ..Default::default() });
    let created = d
        .create_directory(dpb::CreateDirectoryRequest {
            parent_id: parent.clone(),
            kind: dpb::DirectoryKind::Scim as i32,
            display_name: "SCIM".into(),
            brake,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let scim_dir = created.directory.clone().unwrap();
    if case.scim_authoritative {
        d.set_directory_authority(dpb::SetDirectoryAuthorityRequest {
            id: scim_dir.id.clone(),
            authority: dpb::DirectoryAuthority::Authoritative as i32,
            dry_run: false,
            actor: admin(),
        })
        .await
        .unwrap();
    }
    let okta_dir = d
        .create_directory(dpb::CreateDirectoryRequest {
            parent_id: parent,
            kind: dpb::DirectoryKind::Okta as i32,
            display_name: "Okta".into(),
            config_json: okta_config.to_string(),
            sync_interval_seconds: 300,
            brake,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .directory
        .unwrap()
        .id;
    let scim = Scim { http: reqwest::Client::new(), base: scim_dir.scim_base_url.clone(), token: created.scim_token };
    Side { org, scim_dir: scim_dir.id, okta_dir, scim }
}

async fn scim_change(scim: &Scim, model: &mut ScimModel, p: usize, c: &Change) {
    match c {
        Change::Upsert { active } => match model.users.get(&p) {
            Some((id, _)) => {
                scim.set_active(id, *active).await;
                let id = id.clone();
                model.users.insert(p, (id, *active));
            }
            None => {
                let id = scim.create_user(&email(p)).await;
                if !active {
                    scim.set_active(&id, false).await;
                }
                model.users.insert(p, (id, *active));
            }
        },
        Change::Delete => {
            if let Some((id, _)) = model.users.remove(&p) {
                let (status, v) = scim.send(reqwest::Method::DELETE, &format!("/Users/{id}"), None).await;
                assert_eq!(status, 204, "{v}");
                for (_, members) in model.groups.values_mut() {
                    members.remove(&p);
                }
            }
        }
        Change::Join(g) => {
            let Some((uid, _)) = model.users.get(&p).cloned() else { return };
            match model.groups.get_mut(g) {
                Some((gid, members)) => {
                    scim.group_members(gid, "add", &[uid.as_str()]).await;
                    members.insert(p);
                }
                None => {
                    let gid = scim.create_group(GROUPS[*g], &[uid.as_str()]).await;
                    model.groups.insert(*g, (gid, BTreeSet::from([p])));
                }
            }
        }
        Change::Leave(g) => {
            let Some((uid, _)) = model.users.get(&p).cloned() else { return };
            if let Some((gid, members)) = model.groups.get_mut(g)
                && members.remove(&p)
            {
                scim.group_members(gid, "remove", &[uid.as_str()]).await;
            }
        }
    }
}

fn okta_change(f: &dyn FakeDirectory, model: &mut OktaModel, p: usize, c: &Change) {
    match c {
        Change::Upsert { active } => match model.users.get(&p) {
            Some(id) => f.update_user(id, &okta_user(p, *active)),
            None => {
                let id = f.create_user(&okta_user(p, *active));
                model.users.insert(p, id);
            }
        },
        Change::Delete => {
            if let Some(id) = model.users.remove(&p) {
                f.delete_user(&id);
            }
        }
        Change::Join(g) => {
            let Some(uid) = model.users.get(&p).cloned() else { return };
            let gid = model.groups.entry(*g).or_insert_with(|| f.create_group(GROUPS[*g])).clone();
            f.add_member(&gid, &uid);
        }
        Change::Leave(g) => {
            if let (Some(uid), Some(gid)) = (model.users.get(&p), model.groups.get(g)) {
                f.remove_member(gid, uid);
            }
        }
    }
}

async fn sync_now(cluster: &TestCluster, dir: &str) -> Result<(), String> {
    let mut stream = cluster
        .directory()
        .sync_now(dpb::SyncNowRequest { directory_id: dir.into(), wait: true, actor: admin() })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    while let Some(p) = stream.message().await.map_err(|e| e.to_string())? {
        if p.done {
            let run = p.run.unwrap_or_default();
            if run.state != dpb::RunState::Succeeded as i32 {
                return Err(format!("Sync now did not succeed: {run:?}"));
            }
            return Ok(());
        }
    }
    Err("Sync now ended without a final run".into())
}

async fn runs(cluster: &TestCluster, dir: &str) -> Vec<dpb::SyncRun> {
    cluster
        .directory()
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

/// Waits until both directories are quiet: the Okta directory has pulled (and
/// reconciled) everything changed so far — a pull that started after now has
/// succeeded — and no queue entry or run of either is left.
async fn quiet(cluster: &TestCluster, s: &Side) -> Result<(), String> {
    let since = chrono::Utc::now().timestamp_micros();
    let wait = async {
        loop {
            let okta = runs(cluster, &s.okta_dir).await;
            let pulled = okta.iter().any(|r| {
                let started = r.start_time.map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000).unwrap_or(0);
                started > since
                    && r.trigger == dpb::RunTrigger::Interval as i32
                    && r.state == dpb::RunState::Succeeded as i32
            });
            let mut idle = pulled;
            for d in [&s.scim_dir, &s.okta_dir] {
                let lag = cluster
                    .directory()
                    .get_reconcile_lag(dpb::GetReconcileLagRequest { directory_id: d.to_string() })
                    .await
                    .unwrap()
                    .into_inner();
                idle &= lag.queued == 0;
                idle &= runs(cluster, d).await.iter().all(|r| r.state != dpb::RunState::Running as i32);
            }
            if idle {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.map_err(|_| "the directories never went quiet".to_string())
}

/// (email, role, status) of every member of an org, sorted.
async fn members(cluster: &TestCluster, org: &str) -> Vec<(String, String, i32)> {
    let page = cluster
        .membership()
        .list_members(mpb::ListMembersRequest { org_id: org.into(), page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut out: Vec<(String, String, i32)> =
        page.members.into_iter().map(|m| (m.user.map(|u| u.email).unwrap_or_default(), m.role, m.status)).collect();
    out.sort();
    out
}

async fn run_case(kind: DbKind, case: Case) -> Result<(), String> {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let mut cluster = TestCluster::start(kind).await;
    cluster.stop_directory().await;
    cluster.connector_clock = Some(clock.clone());
    cluster.start_directory().await;
    let fake = super::support::okta(clock).await;
    let f = fake.fake.clone();
    // Someone Okta always lists: an empty listing fails a pull by design (it removes
    // nobody), and every case needs pulls that succeed.
    f.create_user(&FakeUser { user_name: "anchor@example.com".into(), active: true, ..okta_user(0, true) });

    // The history: events in the order drawn.
    let live = side(&cluster, &case, &fake.config).await;
    let (mut scim_model, mut okta_model) = (ScimModel::default(), OktaModel::default());
    for e in &case.events {
        match e {
            Event::Scim(p, c) => scim_change(&live.scim, &mut scim_model, *p, c).await,
            Event::Okta(p, c) => okta_change(f.as_ref(), &mut okta_model, *p, c),
            Event::SyncNow(okta) => sync_now(&cluster, if *okta { &live.okta_dir } else { &live.scim_dir }).await?,
            Event::Settle => quiet(&cluster, &live).await?,
        }
    }
    quiet(&cluster, &live).await?;
    let got = members(&cluster, &live.org).await;

    // From scratch: a new parent with the same settings, its SCIM directory given the
    // final SCIM state in one go, its Okta directory reading the same Okta.
    let fresh = side(&cluster, &case, &fake.config).await;
    let mut fresh_ids: BTreeMap<usize, String> = BTreeMap::new();
    for (p, (_, active)) in &scim_model.users {
        let id = fresh.scim.create_user(&email(*p)).await;
        if !active {
            fresh.scim.set_active(&id, false).await;
        }
        fresh_ids.insert(*p, id);
    }
    for (g, (_, members)) in &scim_model.groups {
        let ids: Vec<String> = members.iter().map(|p| fresh_ids[p].clone()).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        fresh.scim.create_group(GROUPS[*g], &refs).await;
    }
    quiet(&cluster, &fresh).await?;
    let want = members(&cluster, &fresh.org).await;
    cluster.stop().await;
    if got == want { Ok(()) } else { Err(format!("after the events: {got:?}\nfrom scratch:     {want:?}")) }
}

fn property(kind: DbKind, default_cases: u32) {
    let cases = std::env::var("MUSTER_PROPERTY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    let config = Config { cases, max_shrink_iters: 32, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |c| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let shown = format!("{c:?}");
        let started = std::time::Instant::now();
        let result = rt.block_on(run_case(kind, c));
        // Each case is slow enough that a line apiece helps whoever watches a failure shrink.
        eprintln!(
            "property case ({:.1} s): {} {shown}",
            started.elapsed().as_secs_f64(),
            if result.is_ok() { "ok" } else { "FAILED" }
        );
        result.map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

mod members_equal_a_rebuild_from_the_final_directories {
    use muster_tests::DbKind;

    #[test]
    fn sqlite() {
        super::property(DbKind::Sqlite, 8);
    }

    #[test]
    fn postgres() {
        if muster_tests::postgres_available() {
            super::property(DbKind::Postgres, 4);
        }
    }
}
