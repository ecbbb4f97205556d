//! Pulls under failures (issue 14): a fifth of each vendor fake's data requests fail
//! the way the vendor fails — a 429 (with `Retry-After: 1` where the vendor sends
//! one), a 500, a 503, a 2 s hang ending in 504 — every answer with the vendor's
//! rate-limit headers, Okta's window naming a reset far ahead. Directory-sync pulls
//! a directory of 2,000 users and 100 groups through its real connectors on the
//! wall clock, and the members come out exactly right; the run's progress shows a
//! wait as it happens and its outcome says what was waited for.
//!
//! Nothing here is timed: how long each pull took is printed (`--nocapture`), for
//! the record, not asserted (about 10 to 30 s each in a debug build; the six take
//! about two minutes one after the other).

use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_connector::ConnectorSpec;
use muster_connector::conformance::{Failure, FakeDirectory, FakeUser};
use muster_proto::directory::v1 as dpb;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use muster_runtime::client::MembershipClient;
use muster_tests::{DbKind, DirectoryClient, TestCluster};
use serde_json::{Value, json};

use super::support::{PATIENCE, named};

on_both_databases! {
    okta_pull_under_failures_ends_with_the_right_members => okta;
    entra_pull_under_failures_ends_with_the_right_members => entra;
    google_pull_under_failures_ends_with_the_right_members => google;
}

/// Groups of the directory: `staff` (every even user) and `g01`..`g99` (user i in
/// `g{1 + i % 99}`).
const GROUPS: usize = 100;
/// The share of data requests that fail.
const FAILING: f64 = 0.2;
/// Users of the directory, on both databases.
const USERS: usize = 2_000;

#[derive(Clone, Copy, Debug)]
enum Vendor {
    Okta,
    Entra,
    Google,
}

/// A vendor fake on the wall clock with the vendor's own page sizes, and a
/// directory config pointing at it (secrets in files of `_secrets`).
struct Idp {
    fake: Arc<dyn FakeDirectory>,
    /// The kind's name ([`ConnectorSpec::KIND`]).
    kind: &'static str,
    config: Value,
    _secrets: tempfile::TempDir,
}

async fn start(vendor: Vendor) -> Idp {
    let secrets = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = secrets.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().to_string()
    };
    match vendor {
        Vendor::Okta => {
            use muster_connector_okta::testing::{API_TOKEN, OktaFake};
            // Okta's `limit` for users and members is 200.
            let fake = OktaFake::start_live(200, false).await;
            // A window a minute long with plenty left: the reset is never a reason to wait.
            fake.set_remaining(999_999);
            fake.set_reset_in(60);
            let token = file("okta-token", API_TOKEN);
            let config = json!({"org_url": fake.base, "page_size": 200, "auth": {"type": "api_token", "token": {"file": token}}});
            Idp { fake: Arc::new(fake), kind: muster_connector_okta::Okta::KIND, config, _secrets: secrets }
        }
        Vendor::Entra => {
            use muster_connector_entra::testing::{CLIENT_ID, CLIENT_SECRET, EntraFake, TENANT};
            // Graph's delta pages hold 100 entries.
            let fake = EntraFake::start(100).await;
            let secret = file("entra-secret", CLIENT_SECRET);
            let config = json!({
                "tenant_id": TENANT, "client_id": CLIENT_ID, "authority": fake.base, "graph_url": fake.base,
                "credential": {"type": "client_secret", "secret": {"file": secret}}
            });
            Idp { fake: Arc::new(fake), kind: muster_connector_entra::Entra::KIND, config, _secrets: secrets }
        }
        Vendor::Google => {
            use muster_connector_google::testing::{ADMIN, GoogleFake};
            // members.list serves 200 a page; users.list 500, held to 200 here.
            let fake = GoogleFake::start(200).await;
            let key = file("google-key.json", &fake.key_json());
            let config = json!({"service_account_key": {"file": key}, "admin_email": ADMIN, "api_url": fake.base});
            Idp { fake: Arc::new(fake), kind: muster_connector_google::Google::KIND, config, _secrets: secrets }
        }
    }
}

/// Fills the fake with `n` users (some deactivated) and the groups, and answers
/// the members the org must end with: (email, role), sorted.
fn populate(fake: &dyn FakeDirectory, n: usize) -> Vec<(String, String)> {
    let mut groups = vec![fake.create_group("staff")];
    groups.extend((1..GROUPS).map(|g| fake.create_group(&format!("g{g:02}"))));
    let mut want = Vec::new();
    for i in 0..n {
        // 131 of 2,000 deactivated: the 1,869 active users.
        let active = !(i % 15 == 7 && i < 1_965);
        let email = format!("u{i:04}@example.com");
        let id = fake.create_user(&FakeUser {
            user_name: email.clone(),
            given_name: format!("U{i}"),
            family_name: "Flaky".into(),
            active,
        });
        let group = 1 + i % (GROUPS - 1);
        fake.add_member(&groups[group], &id);
        if i % 2 == 0 {
            fake.add_member(&groups[0], &id);
        }
        let role = match group {
            1 => Some("Owner"),
            2..=5 => Some("Admin"),
            _ if i % 2 == 0 || group <= 49 => Some("User"),
            _ => None,
        };
        if let (true, Some(role)) = (active, role) {
            want.push((email, role.to_string()));
        }
    }
    want.sort();
    want
}

/// Every member of the org as (email, role), sorted; none may be pending a seat.
async fn members(membership: &MembershipClient, org_id: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = membership
            .clone()
            .list_members(mpb::ListMembersRequest {
                org_id: org_id.to_string(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for m in page.members {
            assert_eq!(m.status, mpb::MemberStatus::Active as i32, "{m:?}");
            out.push((m.user.map(|u| u.email).unwrap_or_default(), m.role));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    out.sort();
    out
}

async fn status(directory: &DirectoryClient, id: &str) -> dpb::DirectoryStatus {
    directory
        .clone()
        .get_directory_status(dpb::GetDirectoryStatusRequest { id: id.to_string() })
        .await
        .unwrap()
        .into_inner()
}

/// What watching the runs showed.
struct Watched {
    /// The first full listing that succeeded.
    run: dpb::SyncRun,
    /// The progress messages of running runs seen on the way.
    progress: Vec<String>,
    /// When that run was first seen past its listing (the pull done, reconciling).
    listed: Option<Instant>,
}

async fn runs(directory: &DirectoryClient, id: &str) -> Vec<dpb::SyncRun> {
    directory
        .clone()
        .list_sync_runs(dpb::ListSyncRunsRequest {
            directory_id: id.to_string(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .runs
}

/// Watches the runs started after `after` (run ids sort by time) until a full listing
/// succeeds, noting progress messages on the way. Later runs (the change feed) may
/// already be running by then: the history is read, not only the latest run. Polls
/// are spaced a little so the watcher does not compete with the pull it watches.
async fn until_a_full_listing_succeeds(directory: &DirectoryClient, id: &str, after: &str) -> Watched {
    let mut progress: Vec<String> = Vec::new();
    let mut listed: Vec<(String, Instant)> = Vec::new();
    let past_listing = [dpb::RunPhase::Reconciling, dpb::RunPhase::Removing, dpb::RunPhase::Done].map(|p| p as i32);
    let found = tokio::time::timeout(PATIENCE * 4, async {
        loop {
            for run in runs(directory, id).await.into_iter().filter(|r| r.id.as_str() > after) {
                if past_listing.contains(&run.phase) && !listed.iter().any(|(seen, _)| *seen == run.id) {
                    listed.push((run.id.clone(), Instant::now()));
                }
                if run.state == dpb::RunState::Running as i32 && progress.last() != Some(&run.outcome) {
                    progress.push(run.outcome.clone());
                }
                if run.state == dpb::RunState::Succeeded as i32 && run.outcome.contains("full listing") {
                    return run;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match found {
        Ok(run) => {
            let listed = listed.iter().find(|(seen, _)| *seen == run.id).map(|(_, at)| *at);
            Watched { run, progress, listed }
        }
        Err(_) => panic!("no full listing succeeded; runs {:?}", runs(directory, id).await),
    }
}

async fn flaky_pull(kind: DbKind, vendor: Vendor) {
    let n = USERS;
    let idp = start(vendor).await;
    let want = populate(idp.fake.as_ref(), n);
    // Until everything is set up, the IdP refuses every request: those pulls fail at
    // once and remove nobody, and the pull measured below is a first full listing.
    idp.fake.fail_after(0, Failure::Unauthorized);

    // The wall clock: retries and rate limits cost real time, as in production.
    let cluster = TestCluster::start(kind).await;
    let users_groups: Vec<_> =
        std::iter::once(named("staff")).chain((6..GROUPS / 2).map(|g| named(&format!("g{g:02}")))).collect();
    let (parent_id, org_id) = cluster
        .enterprise_org(ppb::SettingsInput {
            mode: ppb::ProvisioningMode::Scim as i32,
            advanced_group_mapping: true,
            role_mappings: vec![
                ppb::RoleMapping { role: "Owner".into(), groups: vec![named("g01")] },
                ppb::RoleMapping {
                    role: "Admin".into(),
                    groups: (2..=5).map(|g| named(&format!("g{g:02}"))).collect(),
                },
                ppb::RoleMapping { role: "User".into(), groups: users_groups },
            ],
            seat_tier_mappings: vec![],
        })
        .await;
    let directory = cluster.directory();
    let dir_id = directory
        .clone()
        .create_directory(dpb::CreateDirectoryRequest {
            parent_id,
            kind_name: idp.kind.into(),
            display_name: "Flaky IdP".into(),
            config_json: idp.config.to_string(),
            sync_interval_seconds: 300,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .directory
        .unwrap()
        .id;
    super::support::until("a refused pull", || async {
        status(&directory, &dir_id).await.last_run.is_some_and(|r| r.state == dpb::RunState::Failed as i32)
    })
    .await;

    let refused = runs(&directory, &dir_id).await.first().map(|r| r.id.clone()).unwrap_or_default();
    idp.fake.set_flakiness(FAILING, 14);
    idp.fake.clear_failures();
    let started = Instant::now();
    let Watched { run, progress, listed } = until_a_full_listing_succeeds(&directory, &dir_id, &refused).await;
    let wall = started.elapsed();
    let pull = listed.map(|at| at.duration_since(started).as_secs_f64()).unwrap_or(f64::NAN);

    let have = members(&cluster.membership(), &org_id).await;
    assert_eq!(have.len(), want.len(), "{} members, {} expected", have.len(), want.len());
    assert_eq!(have, want);
    let tally = idp.fake.flaky_tally();
    assert!(tally.failures() > 0, "{tally:?}");
    assert!(
        run.outcome.contains("retr") || run.outcome.contains("rate limit"),
        "the outcome says what was waited for: {}",
        run.outcome
    );
    assert!(progress.iter().any(|p| p.contains("latest wait")), "a wait was shown while the run lasted: {progress:?}");

    let took = |t: Option<prost_types::Timestamp>| t.map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9);
    let run_secs = match (took(run.start_time), took(run.end_time)) {
        (Some(s), Some(e)) => e - s,
        _ => f64::NAN,
    };
    eprintln!(
        "flaky pull {vendor:?} on {kind:?}: {n} users, {GROUPS} groups, {} members: pulled {pull:.1} s after the \
         IdP turned flaky, members right after {:.1} s (the run: {run_secs:.1} s); {} of {} data requests failed \
         ({} throttled, {} 500, {} 503, {} hangs); outcome: {}",
        have.len(),
        wall.as_secs_f64(),
        tally.failures(),
        tally.requests,
        tally.rate_limited,
        tally.server_errors,
        tally.unavailable,
        tally.hangs,
        run.outcome
    );
    idp.fake.set_flakiness(0.0, 0);
    cluster.stop().await;
}

async fn okta(kind: DbKind) {
    flaky_pull(kind, Vendor::Okta).await;
}

async fn entra(kind: DbKind) {
    flaky_pull(kind, Vendor::Entra).await;
}

async fn google(kind: DbKind) {
    flaky_pull(kind, Vendor::Google).await;
}
