//! The Entra connector against its fake Graph tenant: the conformance kit
//! (client secret; certificate) and Entra-specific behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fake::{CLIENT_ID, CLIENT_SECRET, EntraFake, RETRY_AFTER_SECS, TENANT, THUMBPRINT};
use muster_connector::conformance::{Failure, FakeDirectory, FakeUser, run_conformance};
use muster_connector::{
    ConnectorError, HttpSettings, ManualClock, MemorySink, PullConnector, PullMode, PullOptions, SecretRef, run_pull,
};
use muster_connector_entra::{EntraConfig, EntraConnector, EntraCredential};

fn clock() -> Arc<ManualClock> {
    // Near the real time: the fake checks assertion expiry with the wall clock.
    Arc::new(ManualClock::new(Utc::now()))
}

fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> SecretRef {
    let path = dir.path().join(name);
    std::fs::write(&path, value).unwrap();
    SecretRef::File(path)
}

fn config(fake: &EntraFake, credential: EntraCredential) -> EntraConfig {
    EntraConfig {
        tenant_id: TENANT.into(),
        client_id: CLIENT_ID.into(),
        credential,
        authority: fake.base.clone(),
        graph_url: fake.base.clone(),
        http: HttpSettings::default(),
    }
}

#[tokio::test]
async fn conformance_with_client_secret() {
    let clock = clock();
    let fake = EntraFake::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake, EntraCredential::ClientSecret { secret: secret_file(&dir, "s", CLIENT_SECRET) });
    let c = clock.clone();
    let connect = move || Box::new(EntraConnector::new(cfg.clone(), c.clone()).unwrap()) as Box<dyn PullConnector>;
    run_conformance(&fake, &clock, &connect).await.unwrap();
    let requests = fake.requests();
    assert!(requests.iter().any(|r| r.contains("/v1.0/users/delta?%24select=") && r.contains("accountEnabled")));
    assert!(requests.iter().any(|r| r.contains("%24skiptoken=")));
    assert!(requests.iter().any(|r| r.contains("%24deltatoken=")));
}

#[tokio::test]
async fn conformance_with_certificate_assertion() {
    let clock = clock();
    let fake = EntraFake::start(4).await;
    let dir = tempfile::tempdir().unwrap();
    let key = secret_file(&dir, "k.pem", include_str!("test-key.pem"));
    let cfg = config(&fake, EntraCredential::Certificate { private_key: key, thumbprint: THUMBPRINT.into() });
    let c = clock.clone();
    let connect = move || Box::new(EntraConnector::new(cfg.clone(), c.clone()).unwrap()) as Box<dyn PullConnector>;
    run_conformance(&fake, &clock, &connect).await.unwrap();
}

#[tokio::test]
async fn retry_after_is_obeyed_exactly() {
    let clock = clock();
    let fake = EntraFake::start(10).await;
    let dir = tempfile::tempdir().unwrap();
    fake.create_user(&FakeUser {
        user_name: "a@contoso.com".into(),
        given_name: "A".into(),
        family_name: "B".into(),
        active: true,
    });
    let connector = EntraConnector::new(
        config(&fake, EntraCredential::ClientSecret { secret: secret_file(&dir, "s", CLIENT_SECRET) }),
        clock.clone(),
    )
    .unwrap();
    connector.check().await.unwrap();
    fake.fail_next(&[Failure::RateLimited, Failure::RateLimited]);
    let mut sink = MemorySink::new();
    run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(RETRY_AFTER_SECS); 2]);
    assert_eq!(sink.users.len(), 1);
}

#[tokio::test]
async fn check_names_a_wrong_secret_and_an_unknown_tenant() {
    let clock = clock();
    let fake = EntraFake::start(10).await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = config(&fake, EntraCredential::ClientSecret { secret: secret_file(&dir, "s", "nope") });
    let err = EntraConnector::new(wrong.clone(), clock.clone()).unwrap().check().await.unwrap_err();
    assert!(matches!(err, ConnectorError::Unauthorized(ref d) if d.contains("AADSTS7000215")), "{err}");
    let tenant = EntraConfig { tenant_id: "nowhere.onmicrosoft.com".into(), ..wrong };
    let err = EntraConnector::new(tenant, clock.clone()).unwrap().check().await.unwrap_err();
    assert!(err.to_string().contains("AADSTS90002"), "{err}");
}

#[test]
fn config_is_strict() {
    let ok = serde_json::json!({"tenant_id": "t", "client_id": "c", "credential": {"type": "client_secret", "secret": {"env": "ENTRA_SECRET"}}});
    let cfg: EntraConfig = serde_json::from_value(ok).unwrap();
    assert_eq!(cfg.authority, "https://login.microsoftonline.com");
    let bad = serde_json::json!({"tenant_id": "t", "client_id": "c", "credential": {"type": "client_secret", "secret": {"env": "X"}}, "scope": "all"});
    assert!(serde_json::from_value::<EntraConfig>(bad).is_err());
}
