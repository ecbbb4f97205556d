//! The Okta connector against its fake org: the conformance kit (API token,
//! whole org; service app, one app) and Okta-specific behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fake::{API_TOKEN, APP_ID, CLIENT_ID, OktaFake};
use muster_connector::conformance::{Failure, FakeDirectory, FakeUser, run_conformance};
use muster_connector::{
    ConnectorError, HttpSettings, ManualClock, MemorySink, PullConnector, PullMode, PullOptions, SecretRef, TokenPool,
    run_pull,
};
use muster_connector_okta::{MAX_CONCURRENCY, Okta, OktaAuth, OktaConfig, OktaConnector};

fn clock() -> Arc<ManualClock> {
    // Near the real time: the fake checks assertion expiry with the wall clock.
    Arc::new(ManualClock::new(Utc::now()))
}

struct Secrets {
    _dir: tempfile::TempDir,
    token: SecretRef,
    /// A token the fake org does not know.
    wrong_token: SecretRef,
    key: SecretRef,
}

fn secrets() -> Secrets {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("okta-token");
    std::fs::write(&token, format!("{API_TOKEN}\n")).unwrap();
    let key = dir.path().join("okta-key.pem");
    std::fs::write(&key, include_str!("test-key.pem")).unwrap();
    let wrong = dir.path().join("okta-wrong-token");
    std::fs::write(&wrong, "00not-the-okta-token").unwrap();
    Secrets { token: SecretRef::File(token), wrong_token: SecretRef::File(wrong), key: SecretRef::File(key), _dir: dir }
}

fn config(fake: &OktaFake, auth: OktaAuth, app: bool) -> OktaConfig {
    OktaConfig {
        org_url: fake.base.clone(),
        auth,
        app_id: app.then(|| APP_ID.to_owned()),
        page_size: 200,
        log_retention_days: 90,
        http: HttpSettings::default(),
    }
}

/// The kit's steps the Okta fake cannot express until it is built on the
/// kit's `FakeControls` (and the System Log makes every Resume incremental).
const SKIPPED: [&str; 4] = [
    "members outside the scope",
    "resume without a change feed",
    "repeated paging cursor",
    "directory changing during a listing",
];

/// The same service app config with a client id the org does not know.
fn wrong_client(mut cfg: OktaConfig) -> OktaConfig {
    if let OktaAuth::PrivateKeyJwt { client_id, .. } = &mut cfg.auth {
        *client_id = "0oanotaservice".into();
    }
    cfg
}

#[tokio::test]
async fn conformance_whole_org_with_api_token() {
    let clock = clock();
    let fake = OktaFake::start(3, false, clock.clone()).await;
    let s = secrets();
    let cfg = config(&fake, OktaAuth::ApiToken { token: s.token.clone() }, false);
    let wrong = config(&fake, OktaAuth::ApiToken { token: s.wrong_token.clone() }, false);
    let report = run_conformance::<Okta>(&fake, &clock, cfg, wrong).await.unwrap();
    // The fake is not on the kit's FakeControls yet: these steps cannot run against it.
    assert_eq!(report.skipped_steps(), SKIPPED);
    // Paging followed the Link headers, and DEPROVISIONED users were asked for by filter.
    let requests = fake.requests();
    assert!(requests.iter().any(|r| r.contains("/api/v1/users?") && r.contains("after=")));
    assert!(requests.iter().any(|r| r.contains("DEPROVISIONED")));
    assert!(requests.iter().any(|r| r.contains("/api/v1/logs?") && r.contains("sortOrder=ASCENDING")));
}

#[tokio::test]
async fn conformance_one_app_with_service_app_private_key_jwt() {
    let clock = clock();
    let fake = OktaFake::start(2, true, clock.clone()).await;
    let s = secrets();
    let auth =
        OktaAuth::PrivateKeyJwt { client_id: CLIENT_ID.into(), private_key: s.key.clone(), key_id: None, scopes: None };
    let cfg = config(&fake, auth, true);
    let report = run_conformance::<Okta>(&fake, &clock, cfg.clone(), wrong_client(cfg)).await.unwrap();
    assert_eq!(report.skipped_steps(), SKIPPED);
    assert!(fake.requests().iter().any(|r| r.contains("/api/v1/apps/0oaapp456/users?") && r.contains("expand=user")));
}

#[tokio::test]
async fn unassigning_a_user_from_the_app_removes_them() {
    let clock = clock();
    let fake = OktaFake::start(50, true, clock.clone()).await;
    let s = secrets();
    let cfg = config(&fake, OktaAuth::ApiToken { token: s.token.clone() }, true);
    let solo = fake.create_user(&FakeUser {
        user_name: "solo@example.com".into(),
        given_name: "So".into(),
        family_name: "Lo".into(),
        active: true,
    });
    let other = fake.create_user(&FakeUser {
        user_name: "other@example.com".into(),
        given_name: "Ot".into(),
        family_name: "Her".into(),
        active: true,
    });
    let connector = OktaConnector::new(cfg, clock.clone()).unwrap();
    let mut sink = MemorySink::new();
    let outcome = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.users.len(), 2);
    fake.unassign_user(&solo);
    let mode = PullMode::Resume { cursor: outcome.cursor.unwrap() };
    run_pull(&connector, mode, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.users.keys().collect::<Vec<_>>(), vec![&other]);
}

#[tokio::test]
async fn exhausted_rate_limit_window_is_waited_out_before_a_429() {
    let clock = clock();
    let fake = OktaFake::start(2, false, clock.clone()).await;
    let s = secrets();
    for i in 0..5 {
        fake.create_user(&FakeUser {
            user_name: format!("u{i}@example.com"),
            given_name: "G".into(),
            family_name: "F".into(),
            active: true,
        });
    }
    fake.set_remaining(0);
    let connector =
        OktaConnector::new(config(&fake, OktaAuth::ApiToken { token: s.token.clone() }, false), clock.clone()).unwrap();
    let mut sink = MemorySink::new();
    run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.users.len(), 5);
    // Every request after the first waited for X-Rate-Limit-Reset (45 s ahead).
    assert!(!clock.sleeps().is_empty());
    assert!(
        clock.sleeps().iter().all(|d| *d > Duration::from_secs(44) && *d <= Duration::from_secs(45)),
        "{:?}",
        clock.sleeps()
    );
}

#[tokio::test]
async fn check_names_an_unknown_app_and_a_missing_scope() {
    let clock = clock();
    let fake = OktaFake::start(5, false, clock.clone()).await;
    let s = secrets();
    let connector =
        OktaConnector::new(config(&fake, OktaAuth::ApiToken { token: s.token.clone() }, true), clock.clone()).unwrap();
    let err = connector.check().await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(ref d) if d.contains(APP_ID)), "{err}");

    let auth = OktaAuth::PrivateKeyJwt {
        client_id: CLIENT_ID.into(),
        private_key: s.key.clone(),
        key_id: None,
        scopes: Some(vec!["okta.users.read".into(), "okta.users.manage".into()]),
    };
    let connector = OktaConnector::new(config(&fake, auth, false), clock.clone()).unwrap();
    let err = connector.check().await.unwrap_err();
    assert!(matches!(err, ConnectorError::Forbidden(ref d) if d.contains("invalid_scope")), "{err}");

    let bad = OktaConfig {
        auth: OktaAuth::ApiToken { token: SecretRef::File("/nonexistent/okta".into()) },
        ..config(&fake, OktaAuth::ApiToken { token: s.token.clone() }, false)
    };
    let err = OktaConnector::new(bad, clock.clone()).unwrap_err();
    assert!(matches!(err, ConnectorError::Secret { .. }), "{err}");
}

#[test]
fn config_is_strict_and_keeps_secrets_by_reference() {
    let toml_like = serde_json::json!({
        "org_url": "https://acme.okta.com",
        "auth": {"type": "private_key_jwt", "client_id": "0oa1", "private_key": {"file": "/run/secrets/okta.pem"}},
        "app_id": "0oa2",
    });
    let cfg: OktaConfig = serde_json::from_value(toml_like).unwrap();
    assert_eq!(cfg.page_size, 200);
    let unknown =
        serde_json::json!({"org_url": "https://a", "auth": {"type": "api_token", "token": {"env": "T"}}, "tokn": 1});
    assert!(serde_json::from_value::<OktaConfig>(unknown).is_err());
    let inline = serde_json::json!({"org_url": "https://a", "auth": {"type": "api_token", "token": "00abc"}});
    assert!(serde_json::from_value::<OktaConfig>(inline).is_err());
}

/// Issue 17 point 3: an `org_url` with a path (a proxy in front of the org)
/// keeps it for every request, the token endpoint and the System Log
/// position stored in the cursor included.
#[tokio::test]
async fn conformance_behind_a_proxy_under_a_path() {
    let clock = clock();
    let fake = OktaFake::start_at(2, true, clock.clone(), "/okta").await;
    assert!(fake.base.ends_with("/okta"));
    let s = secrets();
    let auth =
        OktaAuth::PrivateKeyJwt { client_id: CLIENT_ID.into(), private_key: s.key.clone(), key_id: None, scopes: None };
    let cfg = config(&fake, auth, true);
    // The fake answers nothing outside /okta: a lost path fails the first request.
    run_conformance::<Okta>(&fake, &clock, cfg.clone(), wrong_client(cfg)).await.unwrap();
}

/// Issue 17 point 7: service-app tokens outlive a connector through the pool.
#[tokio::test]
async fn service_app_tokens_outlive_a_connector() {
    let clock = clock();
    let fake = OktaFake::start(10, false, clock.clone()).await;
    fake.create_user(&FakeUser {
        user_name: "a@x.io".into(),
        given_name: "A".into(),
        family_name: "B".into(),
        active: true,
    });
    let s = secrets();
    let auth =
        OktaAuth::PrivateKeyJwt { client_id: CLIENT_ID.into(), private_key: s.key.clone(), key_id: None, scopes: None };
    let cfg = config(&fake, auth, false);
    let pool = TokenPool::new();
    let connect = || OktaConnector::new(cfg.clone(), clock.clone()).unwrap().with_token_pool(&pool);
    let mut sink = MemorySink::new();
    let outcome = run_pull(&connect(), PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    let resume = PullMode::Resume { cursor: outcome.cursor.unwrap() };
    run_pull(&connect(), resume, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(fake.token_requests(), 1, "two pulls, two connectors, one token");
    // Okta's service-app tokens last an hour; five minutes before, a fresh one.
    clock.advance(Duration::from_secs(3600 - 299));
    run_pull(&connect(), PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(fake.token_requests(), 2);
    // A connection test tests the key: a fresh token, kept for the pulls after it.
    connect().check().await.unwrap();
    assert_eq!(fake.token_requests(), 3);
    run_pull(&connect(), PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(fake.token_requests(), 3);
}

fn users(fake: &OktaFake, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            fake.create_user(&FakeUser {
                user_name: format!("u{i:04}@example.com"),
                given_name: "G".into(),
                family_name: "F".into(),
                active: true,
            })
        })
        .collect()
}

/// Issue 14: Okta puts `X-Rate-Limit-*` on every answer, errors included. A
/// 500, 503 or 504 whose headers say the window resets in a minute, with
/// plenty left, is retried within the backoff, not after the reset.
#[tokio::test]
async fn a_5xx_with_a_far_off_reset_retries_within_the_backoff() {
    let clock = clock();
    let fake = OktaFake::start(50, false, clock.clone()).await;
    let s = secrets();
    users(&fake, 3);
    fake.set_remaining(999_999);
    fake.set_reset_in(60);
    fake.fail_next(&[Failure::ServerError]);
    fake.fail_next_status(503, None);
    fake.fail_next_status(504, None);
    let connector =
        OktaConnector::new(config(&fake, OktaAuth::ApiToken { token: s.token.clone() }, false), clock.clone()).unwrap();
    let mut sink = MemorySink::new();
    let outcome = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.users.len(), 3);
    // Backoff from 500 ms, doubling: at most 0.5 s, 1 s, 2 s; never the 60 s reset.
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 3, "{sleeps:?}");
    for (i, sleep) in sleeps.iter().enumerate() {
        assert!(*sleep <= Duration::from_millis(500 << i), "retry {}: {sleep:?}", i + 1);
    }
    assert_eq!(outcome.waits.retries_after_5xx, 3);
    assert_eq!(outcome.waits.rate_limit_waits, 0);
    assert_eq!(outcome.waits.to_string(), "3 retries after 5xx");
    assert_eq!(sink.waits.len(), 3, "the sink heard of each retry as it started");
}

/// A 429 with `Retry-After` waits for it, not for the (far-off) reset of the
/// spent window, and holds up only its endpoint family for that long.
#[tokio::test]
async fn a_429_waits_for_retry_after_rather_than_the_reset() {
    let clock = clock();
    let fake = OktaFake::start(50, false, clock.clone()).await;
    let s = secrets();
    users(&fake, 3);
    fake.set_reset_in(60);
    fake.fail_next_status(429, Some(1));
    let connector =
        OktaConnector::new(config(&fake, OktaAuth::ApiToken { token: s.token.clone() }, false), clock.clone()).unwrap();
    let mut sink = MemorySink::new();
    let outcome = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.users.len(), 3);
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(1)]);
    assert_eq!(outcome.waits.rate_limit_waits, 1);
    assert_eq!(outcome.waits.to_string(), "waited 1.0 s for Okta's rate limit");
}

/// Group member pages overlap (Okta limits the groups family per minute,
/// not per request), never more at once than the configured concurrency,
/// and the members come out exactly right.
#[tokio::test]
async fn group_member_pages_overlap_within_the_concurrency() {
    let clock = clock();
    let fake = OktaFake::start(5, false, clock.clone()).await;
    let s = secrets();
    let people = users(&fake, 30);
    let mut want = std::collections::BTreeSet::new();
    for g in 0..12 {
        let group = fake.create_group(&format!("g{g}"));
        for (_, user) in people.iter().enumerate().filter(|(i, _)| i % 12 == g || *i < 8) {
            fake.add_member(&group, user);
            want.insert(muster_connector::Membership::new(group.clone(), user.clone()));
        }
    }
    fake.set_latency(Duration::from_millis(20));
    let mut cfg = config(&fake, OktaAuth::ApiToken { token: s.token.clone() }, false);
    cfg.http.concurrency = Some(3);
    let connector = OktaConnector::new(cfg.clone(), clock.clone()).unwrap();
    let mut sink = MemorySink::new();
    run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.memberships, want);
    let most = fake.max_in_flight();
    assert!((2..=3).contains(&most), "{most} requests in flight at once");

    cfg.http.concurrency = Some(MAX_CONCURRENCY + 1);
    let err = OktaConnector::new(cfg, clock.clone()).unwrap_err();
    assert!(matches!(err, ConnectorError::Config(ref d) if d.contains("35")), "{err}");
}

/// A fifth of the data requests failing (429 with Retry-After, 500, 503,
/// hangs ending in 504, all with Okta's rate-limit headers): the listing is
/// still exact, and the outcome says what was waited for.
#[tokio::test]
async fn a_flaky_org_is_listed_exactly() {
    let clock = clock();
    let fake = OktaFake::start(20, false, clock.clone()).await;
    let s = secrets();
    let people = users(&fake, 200);
    let mut want = std::collections::BTreeSet::new();
    for g in 0..20 {
        let group = fake.create_group(&format!("g{g}"));
        for user in people.iter().skip(g).step_by(7) {
            fake.add_member(&group, user);
            want.insert(muster_connector::Membership::new(group.clone(), user.clone()));
        }
    }
    fake.set_flakiness(0.2, 14);
    let connector =
        OktaConnector::new(config(&fake, OktaAuth::ApiToken { token: s.token.clone() }, false), clock.clone()).unwrap();
    let mut sink = MemorySink::new();
    let outcome = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.users.len(), 200);
    assert_eq!(sink.memberships, want);
    let tally = fake.flaky_tally();
    assert!(tally.failures() > 0, "{tally:?}");
    let waited = u64::from(outcome.waits.rate_limit_waits + outcome.waits.retries());
    assert!(waited >= tally.failures(), "{} for {tally:?}", outcome.waits);
    // No retry waited for the 45 s reset the answers named.
    assert!(clock.sleeps().iter().all(|d| *d < Duration::from_secs(45)), "{:?}", clock.sleeps());
}
