//! The Example Directory connector against its fake: the conformance kit
//! (every step, none skipped: the fake is built on the kit's scaffolding) and
//! what is particular to the API (`Retry-After` obeyed exactly, a strict
//! config, paging by cursor). A connector copied from this crate starts with
//! this file: it already runs the kit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fake::{ExampleFake, FakeOptions, RETRY_AFTER_SECS, TOKEN};
use muster_connector::conformance::{Failure, FakeDirectory, FakeUser, STEPS, run_conformance};
use muster_connector::{
    ConnectorError, ConnectorSpec, HttpSettings, ManualClock, MemorySink, PullMode, PullOptions, SecretRef, TokenPool,
    run_pull,
};
use muster_connector_example::{Example, ExampleConfig};

struct Env {
    _dir: tempfile::TempDir,
    token: SecretRef,
    wrong: SecretRef,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        SecretRef::File(path)
    };
    let (token, wrong) = (write("token", TOKEN), write("wrong", "exd_live_not_the_tenants_token"));
    Env { _dir: dir, token, wrong }
}

fn config(fake: &ExampleFake, token: &SecretRef) -> ExampleConfig {
    ExampleConfig { base_url: fake.base.clone(), token: token.clone(), page_size: 200, http: HttpSettings::default() }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Utc::now()))
}

#[tokio::test]
async fn conformance() {
    let clock = clock();
    let fake = ExampleFake::start(3).await;
    let env = env();
    let report =
        run_conformance::<Example>(&fake, &clock, config(&fake, &env.token), config(&fake, &env.wrong)).await.unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.passed, STEPS);
    // Paging went by the API's cursor, at the fake's page size.
    let requests = fake.requests();
    assert!(requests.iter().any(|r| r.starts_with("GET /v1/users?limit=200&cursor=")), "{requests:?}");
    assert!(requests.iter().any(|r| r.contains("/members?limit=200&cursor=")), "{requests:?}");
}

/// Behind a proxy under a path, every request keeps it.
#[tokio::test]
async fn conformance_behind_a_proxy_under_a_path() {
    let clock = clock();
    let fake = ExampleFake::start_with(2, FakeOptions { prefix: "/idp".into(), ..FakeOptions::default() }).await;
    assert!(fake.base.ends_with("/idp"));
    let env = env();
    // The fake answers nothing outside /idp: a lost path fails the first request.
    run_conformance::<Example>(&fake, &clock, config(&fake, &env.token), config(&fake, &env.wrong)).await.unwrap();
}

#[tokio::test]
async fn retry_after_is_obeyed_exactly() {
    let clock = clock();
    let fake = ExampleFake::start(10).await;
    let env = env();
    fake.create_user(&FakeUser {
        user_name: "ann@example.com".into(),
        given_name: "Ann".into(),
        family_name: "Lee".into(),
        active: true,
    });
    let connector = Example::connect(config(&fake, &env.token), clock.clone(), &TokenPool::new()).unwrap();
    fake.fail_next(&[Failure::RateLimited, Failure::RateLimited]);
    let mut sink = MemorySink::new();
    run_pull(connector.as_ref(), PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(RETRY_AFTER_SECS); 2]);
    assert_eq!(sink.user_names(), ["ann@example.com"]);
    assert!(sink.users.values().all(|u| u.given_name.as_deref() == Some("Ann")));
}

#[tokio::test]
async fn a_wrong_token_is_named_and_never_shown() {
    let clock = clock();
    let fake = ExampleFake::start(10).await;
    let env = env();
    let connector = Example::connect(config(&fake, &env.wrong), clock, &TokenPool::new()).unwrap();
    let err = connector.check().await.unwrap_err();
    assert!(matches!(err, ConnectorError::Unauthorized(ref d) if d.contains("unauthenticated")), "{err}");
    assert!(!format!("{err} {err:?} {connector:?}").contains("exd_live"), "{err}");
}

#[test]
fn config_is_strict_and_has_defaults() {
    let ok = serde_json::json!({"base_url": "https://acme.example-directory.test", "token": {"env": "EXAMPLE_TOKEN"}});
    let cfg: ExampleConfig = serde_json::from_value(ok.clone()).unwrap();
    assert_eq!(cfg.page_size, 200);
    assert_eq!(cfg.http, HttpSettings::default());
    let mut unknown = ok;
    unknown["tenant"] = serde_json::json!("acme");
    assert!(serde_json::from_value::<ExampleConfig>(unknown).is_err());
    let inline = serde_json::json!({"base_url": "https://h.test", "token": "exd_live_x"});
    assert!(serde_json::from_value::<ExampleConfig>(inline).is_err(), "a token is a reference, never inline");
}

#[test]
fn a_bad_page_size_or_base_url_is_a_config_error() {
    let env = env();
    for (base_url, page_size) in [("https://h.test", 0), ("https://h.test", 501), ("ftp://h.test", 10)] {
        let cfg = ExampleConfig {
            base_url: base_url.into(),
            token: env.token.clone(),
            page_size,
            http: HttpSettings::default(),
        };
        let err = Example::connect(cfg, clock(), &TokenPool::new()).unwrap_err();
        assert!(matches!(err, ConnectorError::Config(_)), "{base_url} {page_size}: {err}");
    }
}
