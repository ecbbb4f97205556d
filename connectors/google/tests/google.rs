//! The Google Workspace connector against its fake: the conformance kit
//! (whole customer; org unit scope) and Google-specific behaviour: suspended
//! and archived users, org unit and group scopes, nested groups with a cycle,
//! the `CUSTOMER` member, rate-limit reasons, and what `check()` names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fake::{ADMIN, ALL_SCOPES, CLIENT_ID, GoogleFake, NOT_ADMIN, RETRY_AFTER_SECS};
use muster_connector::conformance::{Failure, FakeDirectory, FakeUser, run_conformance};
use muster_connector::{
    Assignment, ConnectorError, HttpSettings, ManualClock, Membership, MemorySink, PullConnector, PullMode,
    PullOptions, SecretRef, TokenPool, run_pull,
};
use muster_connector_google::{Google, GoogleConfig, GoogleConnector, GoogleScope};

fn clock() -> Arc<ManualClock> {
    // Near the real time: the fake checks assertion expiry with the wall clock.
    Arc::new(ManualClock::new(Utc::now()))
}

struct Env {
    _dir: tempfile::TempDir,
    key: SecretRef,
}

fn key_file(fake: &GoogleFake) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("google-key.json");
    std::fs::write(&path, fake.key_json()).unwrap();
    Env { key: SecretRef::File(path), _dir: dir }
}

/// The fake's key file with a key id the service account does not have:
/// the token endpoint refuses the assertion (`invalid_grant`).
fn wrong_key(fake: &GoogleFake) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut key: serde_json::Value = serde_json::from_str(&fake.key_json()).unwrap();
    key["private_key_id"] = serde_json::json!("0000000000000000000000000000000000000000");
    let path = dir.path().join("google-wrong-key.json");
    std::fs::write(&path, key.to_string()).unwrap();
    Env { key: SecretRef::File(path), _dir: dir }
}

fn with_key(cfg: &GoogleConfig, env: &Env) -> GoogleConfig {
    GoogleConfig { service_account_key: env.key.clone(), ..cfg.clone() }
}

fn config(fake: &GoogleFake, env: &Env, scope: GoogleScope) -> GoogleConfig {
    GoogleConfig {
        service_account_key: env.key.clone(),
        admin_email: ADMIN.into(),
        customer: "my_customer".into(),
        scope,
        api_url: fake.base.clone(),
        // From the key file's token_uri.
        token_url: None,
        http: HttpSettings::default(),
    }
}

fn person(name: &str, active: bool) -> FakeUser {
    FakeUser {
        user_name: format!("{name}@example.com"),
        given_name: name.to_uppercase(),
        family_name: "Doe".into(),
        active,
    }
}

async fn full(connector: &GoogleConnector) -> MemorySink {
    let mut sink = MemorySink::new();
    run_pull(connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    sink
}

#[tokio::test]
async fn conformance_whole_customer() {
    let clock = clock();
    let fake = GoogleFake::start(3).await;
    let env = key_file(&fake);
    let cfg = config(&fake, &env, GoogleScope::Customer);
    let wrong = wrong_key(&fake);
    let report = run_conformance::<Google>(&fake, &clock, cfg.clone(), with_key(&cfg, &wrong)).await.unwrap();
    // The fake is not on the kit's FakeControls yet: these steps cannot run against it.
    assert_eq!(
        report.skipped_steps(),
        ["members outside the scope", "repeated paging cursor", "directory changing during a listing"]
    );
    let requests = fake.requests();
    let users = |r: &&String| r.starts_with("GET /admin/directory/v1/users?");
    assert!(requests.iter().filter(users).all(|r| r.contains("customer=my_customer") && r.contains("projection=full")));
    assert!(requests.iter().any(|r| users(&r) && r.contains("maxResults=500") && r.contains("pageToken=")));
    assert!(requests.iter().any(|r| r.starts_with("GET /admin/directory/v1/groups?") && r.contains("maxResults=200")));
    assert!(requests.iter().any(|r| r.contains("/members?maxResults=200&pageToken=")));
}

#[tokio::test]
async fn conformance_org_unit_scope() {
    let clock = clock();
    let fake = GoogleFake::start(4).await;
    let env = key_file(&fake);
    let cfg = config(&fake, &env, GoogleScope::OrgUnits { paths: vec!["/".into()] });
    let wrong = wrong_key(&fake);
    run_conformance::<Google>(&fake, &clock, cfg.clone(), with_key(&cfg, &wrong)).await.unwrap();
    assert!(fake.requests().iter().any(|r| r.contains("query=orgUnitPath%3D%27%2F%27")));
}

#[tokio::test]
async fn suspended_and_archived_users_are_not_assigned() {
    let clock = clock();
    let fake = GoogleFake::start(2).await;
    let env = key_file(&fake);
    let active = fake.create_user(&person("ann", true));
    let suspended = fake.create_user(&person("bob", false));
    let archived = fake.create_user(&person("cid", true));
    fake.archive(&archived);
    let connector = GoogleConnector::new(config(&fake, &env, GoogleScope::Customer), clock.clone()).unwrap();
    let sink = full(&connector).await;
    assert!(sink.users[&active].active);
    assert!(!sink.users[&suspended].active);
    assert!(!sink.users[&archived].active);
    assert_eq!(sink.users[&archived].raw["archived"], true);
    assert_eq!(sink.users[&active].display_name.as_deref(), Some("ANN Doe"));
    assert_eq!(sink.users[&active].assignment, Assignment::Scope);
}

#[tokio::test]
async fn org_unit_scope_takes_the_unit_and_those_below_and_filters_members() {
    let clock = clock();
    let fake = GoogleFake::start(2).await;
    let env = key_file(&fake);
    let eng = fake.create_user(&person("eng", true));
    let web = fake.create_user(&person("web", true));
    let sales = fake.create_user(&person("sales", true));
    fake.move_to_org_unit(&eng, "/Engineering");
    fake.move_to_org_unit(&web, "/Engineering/Web Team");
    fake.move_to_org_unit(&sales, "/Sales");
    let all = fake.create_group("all");
    for u in [&eng, &web, &sales] {
        fake.add_member(&all, u);
    }
    let scope = GoogleScope::OrgUnits { paths: vec!["/Engineering".into()] };
    let connector = GoogleConnector::new(config(&fake, &env, scope), clock.clone()).unwrap();
    connector.check().await.unwrap();
    let sink = full(&connector).await;
    assert_eq!(sink.users.keys().cloned().collect::<Vec<_>>(), vec![eng.clone(), web.clone()]);
    let want: std::collections::BTreeSet<_> = [Membership::new(&all, &eng), Membership::new(&all, &web)].into();
    assert_eq!(sink.memberships, want);
    assert!(fake.requests().iter().any(|r| r.contains("query=orgUnitPath%3D%27%2FEngineering%27")));

    // A quoted path with a space is found too.
    let scope = GoogleScope::OrgUnits { paths: vec!["/Engineering/Web Team".into()] };
    let connector = GoogleConnector::new(config(&fake, &env, scope), clock.clone()).unwrap();
    assert_eq!(full(&connector).await.users.keys().cloned().collect::<Vec<_>>(), vec![web]);
}

#[tokio::test]
async fn group_scope_expands_nested_groups_guards_cycles_and_handles_the_customer_member() {
    let clock = clock();
    let fake = GoogleFake::start(2).await;
    let env = key_file(&fake);
    let users: Vec<String> = (0..6).map(|i| fake.create_user(&person(&format!("u{i}"), true))).collect();
    let outsider = fake.create_user(&person("outsider", true));
    let top = fake.create_group("top");
    let mid = fake.create_group("mid");
    let leaf = fake.create_group("leaf");
    fake.add_member(&top, &users[0]);
    fake.nest(&top, &mid);
    fake.add_member(&mid, &users[1]);
    fake.add_member(&mid, &users[2]);
    fake.nest(&mid, &leaf);
    fake.add_member(&leaf, &users[3]);
    fake.add_member(&leaf, &users[4]);
    fake.nest(&leaf, &top); // a cycle
    fake.add_external(&leaf, "999999999999999999999");
    let key = "top@example.com".to_owned();
    let scope = GoogleScope::Groups { groups: vec![key] };
    let connector = GoogleConnector::new(config(&fake, &env, scope.clone()), clock.clone()).unwrap();
    connector.check().await.unwrap();
    let sink = full(&connector).await;
    let mut want_users: Vec<String> = users[..5].to_vec();
    want_users.sort();
    assert_eq!(sink.users.keys().cloned().collect::<Vec<_>>(), want_users);
    assert!(!sink.users.contains_key(&outsider));
    assert!(sink.users.values().all(|u| u.assignment == Assignment::Group));
    assert_eq!(sink.groups.keys().cloned().collect::<Vec<_>>(), vec![top.clone()]);
    let want: std::collections::BTreeSet<_> = users[..5].iter().map(|u| Membership::new(&top, u)).collect();
    assert_eq!(sink.memberships, want);

    // "All users in the domain" brings everyone in.
    fake.add_everyone(&leaf);
    let sink = full(&connector).await;
    assert_eq!(sink.users.len(), 7);
    assert_eq!(sink.memberships.len(), 7);
}

#[tokio::test]
async fn customer_member_in_whole_customer_scope_means_every_user() {
    let clock = clock();
    let fake = GoogleFake::start(3).await;
    let env = key_file(&fake);
    for i in 0..4 {
        fake.create_user(&person(&format!("e{i}"), true));
    }
    let everyone = fake.create_group("everyone");
    fake.add_everyone(&everyone);
    let connector = GoogleConnector::new(config(&fake, &env, GoogleScope::Customer), clock.clone()).unwrap();
    let sink = full(&connector).await;
    assert_eq!(sink.memberships.iter().filter(|m| m.group_id == everyone).count(), 4);
}

#[tokio::test]
async fn rate_limit_reasons_are_retried_and_retry_after_is_obeyed() {
    let clock = clock();
    let fake = GoogleFake::start(10).await;
    let env = key_file(&fake);
    fake.create_user(&person("ann", true));
    let connector = GoogleConnector::new(config(&fake, &env, GoogleScope::Customer), clock.clone()).unwrap();
    connector.check().await.unwrap();
    // 403 userRateLimitExceeded (backoff), then 429 rateLimitExceeded with Retry-After.
    fake.fail_next(&[Failure::RateLimited, Failure::RateLimited]);
    let sink = full(&connector).await;
    assert_eq!(sink.users.len(), 1);
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 2, "{sleeps:?}");
    assert!(sleeps[0] > Duration::ZERO && sleeps[0] <= Duration::from_millis(500), "{sleeps:?}");
    assert_eq!(sleeps[1], Duration::from_secs(RETRY_AFTER_SECS));
}

#[tokio::test]
async fn a_forbidden_answer_stops_the_run_without_retrying() {
    let clock = clock();
    let fake = GoogleFake::start(10).await;
    let env = key_file(&fake);
    fake.create_user(&person("ann", true));
    let cfg = GoogleConfig { admin_email: NOT_ADMIN.into(), ..config(&fake, &env, GoogleScope::Customer) };
    let connector = GoogleConnector::new(cfg, clock.clone()).unwrap();
    let mut sink = MemorySink::new();
    let err = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap_err();
    assert!(
        matches!(err, ConnectorError::Forbidden(ref d) if d.contains("forbidden") && d.contains(NOT_ADMIN)),
        "{err}"
    );
    assert!(clock.sleeps().is_empty());
    assert_eq!(sink.listings_completed, 0);
}

#[tokio::test]
async fn resume_is_a_full_listing() {
    let clock = clock();
    let fake = GoogleFake::start(10).await;
    let env = key_file(&fake);
    fake.create_user(&person("ann", true));
    let connector = GoogleConnector::new(config(&fake, &env, GoogleScope::Customer), clock.clone()).unwrap();
    assert!(!connector.capabilities().incremental);
    let mut sink = MemorySink::new();
    let mode = PullMode::Resume { cursor: muster_connector::Cursor::new("anything") };
    let outcome = run_pull(&connector, mode, &mut sink, &PullOptions::default()).await.unwrap();
    assert!(outcome.full_listing && outcome.resynced && outcome.cursor.is_none());
    assert_eq!(sink.users.len(), 1);
}

#[tokio::test]
async fn check_names_what_is_wrong() {
    let clock = clock();
    let fake = GoogleFake::start(10).await;
    let env = key_file(&fake);
    fake.create_user(&person("ann", true));
    let check = |cfg: GoogleConfig| {
        let clock = clock.clone();
        async move { GoogleConnector::new(cfg, clock).unwrap().check().await }
    };
    let good = config(&fake, &env, GoogleScope::Customer);
    let report = check(good.clone()).await.unwrap();
    assert!(report.summary.contains(ADMIN), "{}", report.summary);

    // A key the token endpoint does not accept (another key id: a rotated key).
    let dir = tempfile::tempdir().unwrap();
    let rotated = dir.path().join("rotated.json");
    std::fs::write(&rotated, fake.key_json().replace(fake::KEY_ID, "0000")).unwrap();
    let err = check(GoogleConfig { service_account_key: SecretRef::File(rotated), ..good.clone() }).await.unwrap_err();
    assert!(
        matches!(err, ConnectorError::Unauthorized(ref d) if d.contains("key") && d.contains("Invalid JWT Signature")),
        "{err}"
    );

    // The admin to impersonate does not exist.
    let err = check(GoogleConfig { admin_email: "ghost@example.com".into(), ..good.clone() }).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Unauthorized(ref d) if d.contains("ghost@example.com")), "{err}");

    // The admin to impersonate is not an admin.
    let err = check(GoogleConfig { admin_email: NOT_ADMIN.into(), ..good.clone() }).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Forbidden(ref d) if d.contains("must be an administrator")), "{err}");

    // Unknown customer.
    let err = check(GoogleConfig { customer: "C0nothere".into(), ..good.clone() }).await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(ref d) if d.contains("C0nothere")), "{err}");

    // Unknown org unit, unknown group.
    let ou = GoogleScope::OrgUnits { paths: vec!["/Nowhere".into()] };
    let err = check(GoogleConfig { scope: ou, ..good.clone() }).await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(ref d) if d.contains("/Nowhere")), "{err}");
    let groups = GoogleScope::Groups { groups: vec!["nope@example.com".into()] };
    let err = check(GoogleConfig { scope: groups, ..good.clone() }).await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(ref d) if d.contains("nope@example.com")), "{err}");

    // Delegation granted without the group scopes.
    fake.grant_only(&ALL_SCOPES[..1]);
    let err = check(good.clone()).await.unwrap_err();
    assert!(
        matches!(err, ConnectorError::Forbidden(ref d) if d.contains("domain-wide delegation not granted") && d.contains(CLIENT_ID) && d.contains("admin.directory.group.readonly")),
        "{err}"
    );
    fake.grant_only(&ALL_SCOPES);

    // The key file cannot be read, or is not a service-account key.
    let missing = GoogleConfig { service_account_key: SecretRef::File("/nonexistent/key.json".into()), ..good.clone() };
    assert!(matches!(GoogleConnector::new(missing, clock.clone()).unwrap_err(), ConnectorError::Secret { .. }));
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"type\": \"authorized_user\", \"client_id\": \"x\"}").unwrap();
    let junk = GoogleConfig { service_account_key: SecretRef::File(junk), ..good };
    assert!(matches!(GoogleConnector::new(junk, clock.clone()).unwrap_err(), ConnectorError::Config(_)));
}

#[test]
fn config_is_strict_and_keeps_the_key_by_reference() {
    let cfg: GoogleConfig = serde_json::from_value(serde_json::json!({
        "service_account_key": {"file": "/run/secrets/google.json"},
        "admin_email": "admin@example.com",
        "scope": {"type": "org_units", "paths": ["/Engineering"]},
    }))
    .unwrap();
    assert_eq!(cfg.customer, "my_customer");
    assert_eq!(cfg.api_url, "https://admin.googleapis.com");
    assert_eq!(cfg.token_url, None);
    let default: GoogleConfig = serde_json::from_value(serde_json::json!({
        "service_account_key": {"env": "GOOGLE_KEY"}, "admin_email": "a@b.c",
    }))
    .unwrap();
    assert_eq!(default.scope, GoogleScope::Customer);
    let unknown = serde_json::json!({"service_account_key": {"env": "K"}, "admin_email": "a@b.c", "domain": "b.c"});
    assert!(serde_json::from_value::<GoogleConfig>(unknown).is_err());
    let inline = serde_json::json!({"service_account_key": "{\"private_key\": \"…\"}", "admin_email": "a@b.c"});
    assert!(serde_json::from_value::<GoogleConfig>(inline).is_err());
}

#[tokio::test]
async fn the_token_is_reused_then_refreshed_before_it_expires() {
    let clock = clock();
    let fake = GoogleFake::start(10).await;
    let env = key_file(&fake);
    fake.create_user(&person("ann", true));
    let connector = GoogleConnector::new(config(&fake, &env, GoogleScope::Customer), clock.clone()).unwrap();
    let tokens = || fake.requests().iter().filter(|r| r.starts_with("POST /token")).count();
    connector.check().await.unwrap();
    full(&connector).await;
    assert_eq!(tokens(), 1);
    // Google's tokens last 3599 s; the cache refreshes 5 minutes before.
    clock.advance(Duration::from_secs(3599 - 300 + 1));
    full(&connector).await;
    assert_eq!(tokens(), 2);
}

#[tokio::test]
async fn throttled_past_the_retries_is_rate_limited() {
    let clock = clock();
    let fake = GoogleFake::start(10).await;
    let env = key_file(&fake);
    fake.create_user(&person("ann", true));
    let cfg = GoogleConfig {
        http: HttpSettings { max_attempts: 1, ..HttpSettings::default() },
        ..config(&fake, &env, GoogleScope::Customer)
    };
    let connector = GoogleConnector::new(cfg, clock.clone()).unwrap();
    connector.check().await.unwrap();
    // The first throttling answer of the fake is 403 userRateLimitExceeded.
    fake.fail_next(&[Failure::RateLimited]);
    let mut sink = MemorySink::new();
    let err = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::RateLimited { .. }), "{err}");
}

/// Issue 17 point 3: an `api_url` with a path (a proxy in front of Google)
/// keeps it for every request.
#[tokio::test]
async fn conformance_behind_a_proxy_under_a_path() {
    let clock = clock();
    let fake = GoogleFake::start_at(3, "/google").await;
    assert!(fake.base.ends_with("/google"));
    let env = key_file(&fake);
    let cfg = config(&fake, &env, GoogleScope::Customer);
    // The fake answers nothing outside /google: a lost path fails the first request.
    let wrong = wrong_key(&fake);
    run_conformance::<Google>(&fake, &clock, cfg.clone(), with_key(&cfg, &wrong)).await.unwrap();
}

/// Issue 17 point 4: `token_url` is a setting of its own, used instead of
/// the key file's `token_uri`.
#[tokio::test]
async fn token_url_overrides_the_key_files_token_uri() {
    let clock = clock();
    let fake = GoogleFake::start(10).await;
    fake.create_user(&person("tok", true));
    // A key whose token_uri leads nowhere: only the setting can make this work.
    let dir = tempfile::tempdir().unwrap();
    let mut key: serde_json::Value = serde_json::from_str(&fake.key_json()).unwrap();
    key["token_uri"] = serde_json::json!("http://127.0.0.1:9/token");
    let path = dir.path().join("key.json");
    std::fs::write(&path, key.to_string()).unwrap();
    // As directory-sync stores it: the URL inline, the key by reference.
    let json = serde_json::json!({
        "service_account_key": {"file": path},
        "admin_email": ADMIN, "api_url": fake.base, "token_url": fake.token_url(),
    });
    let cfg: GoogleConfig = serde_json::from_value(json).unwrap();
    assert_eq!(cfg.token_url.as_deref(), Some(fake.token_url().as_str()));
    GoogleConnector::new(cfg.clone(), clock.clone()).unwrap().check().await.unwrap();
    let without = GoogleConfig { token_url: None, ..cfg };
    let err = GoogleConnector::new(without, clock).unwrap().check().await.unwrap_err();
    assert!(matches!(err, ConnectorError::Transport(ref t) if t.contains("127.0.0.1:9")), "{err}");
}

/// Issue 17 point 7: the token of a service account outlives a connector
/// through the pool, until shortly before it expires.
#[tokio::test]
async fn tokens_outlive_a_connector_until_shortly_before_expiry() {
    let clock = clock();
    let fake = GoogleFake::start(10).await;
    fake.create_user(&person("p", true));
    let env = key_file(&fake);
    let cfg = config(&fake, &env, GoogleScope::Customer);
    let pool = TokenPool::new();
    let connect = || GoogleConnector::new(cfg.clone(), clock.clone()).unwrap().with_token_pool(&pool);
    full(&connect()).await;
    full(&connect()).await;
    assert_eq!(fake.token_requests(), 1, "two pulls, two connectors, one token");
    // Google's tokens last 3599 s here; five minutes before, a fresh one is fetched.
    clock.advance(Duration::from_secs(3599 - 299));
    full(&connect()).await;
    assert_eq!(fake.token_requests(), 2);
    // A connection test tests the key and the delegation: a fresh token, kept for the pulls after it.
    connect().check().await.unwrap();
    assert_eq!(fake.token_requests(), 3);
    full(&connect()).await;
    assert_eq!(fake.token_requests(), 3);
    // Another admin to impersonate is another credential: its own token.
    let other = GoogleConfig { admin_email: NOT_ADMIN.into(), ..cfg.clone() };
    let mut sink = MemorySink::new();
    let other = GoogleConnector::new(other, clock.clone()).unwrap().with_token_pool(&pool);
    let err = run_pull(&other, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Forbidden(_)), "{err}");
    assert_eq!(fake.token_requests(), 4);
}

/// Issue 14: Google sends no rate-limit headers; a 5xx carrying a far-off
/// `Retry-After` (a proxy or front end may add one) is an error, not a
/// throttle: a 500 and a 504 are retried within the backoff. Its throttling
/// answers (429 `rateLimitExceeded` without `Retry-After`) back off too.
#[tokio::test]
async fn a_5xx_with_a_far_off_retry_after_retries_within_the_backoff() {
    let clock = clock();
    let fake = GoogleFake::start(10).await;
    let env = key_file(&fake);
    fake.create_user(&person("ann", true));
    let connector = GoogleConnector::new(config(&fake, &env, GoogleScope::Customer), clock.clone()).unwrap();
    connector.check().await.unwrap();
    fake.fail_next_status(500, Some(60));
    fake.fail_next_status(504, Some(60));
    fake.fail_next_status(429, None);
    let mut sink = MemorySink::new();
    let outcome = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.users.len(), 1);
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 3, "{sleeps:?}");
    for (i, sleep) in sleeps.iter().enumerate() {
        assert!(*sleep <= Duration::from_millis(500 << i), "retry {}: {sleep:?}", i + 1);
    }
    assert_eq!(outcome.waits.retries_after_5xx, 2);
    assert_eq!(outcome.waits.rate_limit_waits, 1);
}

/// Groups are expanded side by side, within the configured concurrency, and
/// a fifth of the requests failing (429 and 403 rate limits, 500, 503,
/// hangs ending in 504) still lists the customer exactly.
#[tokio::test]
async fn groups_expand_side_by_side_and_a_flaky_customer_is_listed_exactly() {
    let clock = clock();
    let fake = GoogleFake::start(20).await;
    let env = key_file(&fake);
    let users: Vec<String> = (0..200).map(|i| fake.create_user(&person(&format!("f{i:03}"), true))).collect();
    let mut want = std::collections::BTreeSet::new();
    for g in 0..20 {
        let group = fake.create_group(&format!("g{g:02}"));
        for user in users.iter().skip(g).step_by(7) {
            fake.add_member(&group, user);
            want.insert(Membership::new(group.clone(), user.clone()));
        }
    }
    let cfg = GoogleConfig {
        http: HttpSettings { concurrency: Some(3), ..HttpSettings::default() },
        ..config(&fake, &env, GoogleScope::Customer)
    };
    let connector = GoogleConnector::new(cfg, clock.clone()).unwrap();
    connector.check().await.unwrap();
    fake.set_latency(Duration::from_millis(10));
    let sink = full(&connector).await;
    assert_eq!(sink.memberships, want);
    let most = fake.max_in_flight();
    assert!((2..=3).contains(&most), "{most} requests in flight at once");
    fake.set_latency(Duration::ZERO);

    fake.set_flakiness(0.2, 14);
    let mut sink = MemorySink::new();
    let outcome = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.users.len(), 200);
    assert_eq!(sink.memberships, want);
    let tally = fake.flaky_tally();
    assert!(tally.failures() > 0, "{tally:?}");
    assert!(u64::from(outcome.waits.rate_limit_waits + outcome.waits.retries()) >= tally.failures());
}
