//! The Entra connector against its fake Graph tenant: the conformance kit
//! (client secret; certificate) and Entra-specific behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fake::{CLIENT_ID, CLIENT_SECRET, EntraFake, RETRY_AFTER_SECS, SERVICE_PRINCIPAL_ID, TENANT, THUMBPRINT};
use muster_connector::conformance::{Failure, FakeDirectory, FakeUser, run_conformance};
use muster_connector::{
    ConnectorError, Cursor, HttpSettings, ManualClock, Membership, MemorySink, PullConnector, PullMode, PullOptions,
    SecretRef, run_pull,
};
use muster_connector_entra::{EntraConfig, EntraConnector, EntraCredential, EntraScope};

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
        scope: EntraScope::Tenant,
        http: HttpSettings::default(),
    }
}

fn app_config(fake: &EntraFake, dir: &tempfile::TempDir, service_principal_id: &str) -> EntraConfig {
    EntraConfig {
        scope: EntraScope::App { service_principal_id: service_principal_id.into() },
        ..config(fake, EntraCredential::ClientSecret { secret: secret_file(dir, "s", CLIENT_SECRET) })
    }
}

fn person(name: &str) -> FakeUser {
    FakeUser {
        user_name: format!("{name}@contoso.com"),
        given_name: name.into(),
        family_name: "X".into(),
        active: true,
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
    assert_eq!(cfg.scope, EntraScope::Tenant);
    let bad = serde_json::json!({"tenant_id": "t", "client_id": "c", "credential": {"type": "client_secret", "secret": {"env": "X"}}, "scopes": "all"});
    assert!(serde_json::from_value::<EntraConfig>(bad).is_err());
}

#[tokio::test]
async fn conformance_in_app_scope_through_group_assignments() {
    let clock = clock();
    // Page size 2: the kit's three groups span two pages of assignments.
    let fake = EntraFake::start(2).await;
    // Every group the kit creates is assigned to the app; its users are in
    // scope as direct members of those groups (all are in "everyone").
    fake.set_auto_assign(false, true);
    let dir = tempfile::tempdir().unwrap();
    let cfg = app_config(&fake, &dir, SERVICE_PRINCIPAL_ID);
    let c = clock.clone();
    let connect = move || Box::new(EntraConnector::new(cfg.clone(), c.clone()).unwrap()) as Box<dyn PullConnector>;
    assert!(!connect().capabilities().incremental);
    run_conformance(&fake, &clock, &connect).await.unwrap();
    let requests = fake.requests();
    let assigned = format!("/v1.0/servicePrincipals/{SERVICE_PRINCIPAL_ID}/appRoleAssignedTo");
    assert!(requests.iter().any(|r| r.contains(&assigned) && r.contains("%24skiptoken=")), "assignments not paged");
    assert!(requests.iter().any(|r| r.contains("/members") && r.contains("%24skiptoken=")), "members not paged");
    assert!(!requests.iter().any(|r| r.contains("/delta")), "app scope must not read the tenant's delta");
}

#[tokio::test]
async fn conformance_in_app_scope_through_user_assignments() {
    let clock = clock();
    let fake = EntraFake::start(4).await;
    fake.set_auto_assign(true, true);
    let dir = tempfile::tempdir().unwrap();
    let cfg = app_config(&fake, &dir, SERVICE_PRINCIPAL_ID);
    let c = clock.clone();
    let connect = move || Box::new(EntraConnector::new(cfg.clone(), c.clone()).unwrap()) as Box<dyn PullConnector>;
    run_conformance(&fake, &clock, &connect).await.unwrap();
}

#[tokio::test]
async fn app_scope_lists_only_assigned_users_and_groups() {
    let clock = clock();
    let fake = EntraFake::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let [alice, bob, carol, dave, erin] =
        ["alice", "bob", "carol", "dave", "erin"].map(|n| fake.create_user(&person(n)));
    let engineers = fake.create_group("engineers");
    let outsiders = fake.create_group("outsiders");
    let nested = fake.create_group("nested");
    for user in [&alice, &bob] {
        fake.add_member(&engineers, user);
    }
    fake.add_member(&outsiders, &carol);
    fake.add_member(&outsiders, &alice);
    fake.add_member(&nested, &erin);
    // A nested group of an assigned group is not expanded: erin is out of scope.
    fake.add_member(&engineers, &nested);
    fake.assign(&engineers);
    fake.assign(&dave);
    fake.assign(&alice); // also via the group: listed once
    fake.assign("client-app-service-principal"); // not a person
    let connector = EntraConnector::new(app_config(&fake, &dir, SERVICE_PRINCIPAL_ID), clock.clone()).unwrap();
    assert!(!connector.capabilities().incremental);
    connector.check().await.unwrap();

    let mut sink = MemorySink::new();
    let outcome = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert!(outcome.full_listing);
    assert_eq!(outcome.cursor, None);
    let users: Vec<&String> = sink.users.keys().collect();
    let mut want = vec![&alice, &bob, &dave];
    want.sort();
    assert_eq!(users, want, "carol (unassigned group) and erin (nested group) are out of scope");
    assert_eq!(sink.users[&bob].user_name, "bob@contoso.com");
    assert_eq!(sink.users[&bob].given_name.as_deref(), Some("bob"));
    let groups: Vec<&String> = sink.groups.keys().collect();
    assert_eq!(groups, vec![&engineers]);
    assert_eq!(sink.groups[&engineers].name, "engineers");
    let memberships: Vec<Membership> = sink.memberships.iter().cloned().collect();
    assert_eq!(memberships, {
        let mut m = vec![Membership::new(&engineers, &alice), Membership::new(&engineers, &bob)];
        m.sort();
        m
    });
    let requests = fake.requests();
    assert!(requests.iter().any(|r| r.contains("/v1.0/users/") && r.contains("accountEnabled")));

    // Unassigning the group takes bob out; a resume is answered by a full listing.
    fake.unassign(&engineers);
    let resume = PullMode::Resume { cursor: Cursor::encode(&"anything").unwrap() };
    let outcome = run_pull(&connector, resume, &mut sink, &PullOptions::default()).await.unwrap();
    assert!(outcome.full_listing && outcome.resynced);
    let users: Vec<&String> = sink.users.keys().collect();
    let mut want = vec![&alice, &dave];
    want.sort();
    assert_eq!(users, want);
    assert!(sink.groups.is_empty());
    assert!(sink.memberships.is_empty());

    // Unassigning a user takes them out of the next listing.
    fake.unassign(&dave);
    run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.users.keys().collect::<Vec<_>>(), vec![&alice]);
}

#[tokio::test]
async fn app_scope_check_names_an_unknown_service_principal() {
    let clock = clock();
    let fake = EntraFake::start(10).await;
    let dir = tempfile::tempdir().unwrap();
    let unknown = "00000000-1111-4222-8333-444444444444";
    let connector = EntraConnector::new(app_config(&fake, &dir, unknown), clock.clone()).unwrap();
    let err = connector.check().await.unwrap_err();
    assert!(matches!(err, ConnectorError::NotFound(ref d) if d.contains(unknown)), "{err}");
    fake.deny_applications(true);
    let connector = EntraConnector::new(app_config(&fake, &dir, SERVICE_PRINCIPAL_ID), clock.clone()).unwrap();
    let err = connector.check().await.unwrap_err();
    assert!(matches!(err, ConnectorError::Forbidden(ref d) if d.contains("Application.Read.All")), "{err}");
    let err =
        run_pull(&connector, PullMode::Refresh, &mut MemorySink::new(), &PullOptions::default()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Forbidden(ref d) if d.contains("Application.Read.All")), "{err}");
    fake.deny_applications(false);
    let bad = app_config(&fake, &dir, "../users");
    assert!(matches!(EntraConnector::new(bad, clock.clone()), Err(ConnectorError::Config(_))));
    let report =
        EntraConnector::new(app_config(&fake, &dir, SERVICE_PRINCIPAL_ID), clock).unwrap().check().await.unwrap();
    assert!(report.summary.contains(SERVICE_PRINCIPAL_ID), "{}", report.summary);
}

#[test]
fn app_scope_config_parses() {
    let app = serde_json::json!({"tenant_id": "t", "client_id": "c", "credential": {"type": "client_secret", "secret": {"env": "X"}},
        "scope": {"type": "app", "service_principal_id": "sp"}});
    let cfg: EntraConfig = serde_json::from_value(app).unwrap();
    assert_eq!(cfg.scope, EntraScope::App { service_principal_id: "sp".into() });
    let tenant = serde_json::json!({"tenant_id": "t", "client_id": "c", "credential": {"type": "client_secret", "secret": {"env": "X"}},
        "scope": {"type": "tenant"}});
    assert_eq!(serde_json::from_value::<EntraConfig>(tenant).unwrap().scope, EntraScope::Tenant);
    let extra = serde_json::json!({"tenant_id": "t", "client_id": "c", "credential": {"type": "client_secret", "secret": {"env": "X"}},
        "scope": {"type": "app", "service_principal_id": "sp", "app_id": "c"}});
    assert!(serde_json::from_value::<EntraConfig>(extra).is_err());
}
