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
    SecretRef, TokenPool, run_pull,
};
use muster_connector_entra::{BATCH_CONCURRENCY, Entra, EntraConfig, EntraConnector, EntraCredential, EntraScope};

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
        token_scope: None,
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

/// The same config with a secret the tenant does not accept (or, for a
/// certificate, a thumbprint it does not know).
fn wrong_credentials(cfg: &EntraConfig, dir: &tempfile::TempDir) -> EntraConfig {
    let credential = match &cfg.credential {
        EntraCredential::ClientSecret { .. } => {
            EntraCredential::ClientSecret { secret: secret_file(dir, "wrong", "not-the-client-secret") }
        }
        EntraCredential::Certificate { private_key, .. } => {
            EntraCredential::Certificate { private_key: private_key.clone(), thumbprint: "00".repeat(20) }
        }
    };
    EntraConfig { credential, ..cfg.clone() }
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
    run_conformance::<Entra>(&fake, &clock, cfg.clone(), wrong_credentials(&cfg, &dir)).await.unwrap();
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
    run_conformance::<Entra>(&fake, &clock, cfg.clone(), wrong_credentials(&cfg, &dir)).await.unwrap();
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
    assert!(!EntraConnector::new(cfg.clone(), clock.clone()).unwrap().capabilities().incremental);
    run_conformance::<Entra>(&fake, &clock, cfg.clone(), wrong_credentials(&cfg, &dir)).await.unwrap();
    let requests = fake.requests();
    let assigned = format!("/v1.0/servicePrincipals/{SERVICE_PRINCIPAL_ID}/appRoleAssignedTo");
    assert!(requests.iter().any(|r| r.contains(&assigned) && r.contains("%24skiptoken=")), "assignments not paged");
    // Member pages are read inside batches, the later ones by their paging link.
    let items = fake.batch_items();
    assert!(items.iter().any(|r| r.contains("/members") && r.contains("%24skiptoken=")), "members not paged");
    assert!(!requests.iter().any(|r| r.contains("/delta")), "app scope must not read the tenant's delta");
    assert!(!requests.iter().any(|r| r.starts_with("GET /v1.0/users/")), "no user is read on its own");
}

#[tokio::test]
async fn conformance_in_app_scope_through_user_assignments() {
    let clock = clock();
    let fake = EntraFake::start(4).await;
    fake.set_auto_assign(true, true);
    let dir = tempfile::tempdir().unwrap();
    let cfg = app_config(&fake, &dir, SERVICE_PRINCIPAL_ID);
    run_conformance::<Entra>(&fake, &clock, cfg.clone(), wrong_credentials(&cfg, &dir)).await.unwrap();
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
    // Dave (assigned directly) is read by a batched `id in (...)` filter with the delta path's properties.
    let items = fake.batch_items();
    assert!(items.iter().any(|r| r.contains("/v1.0/users?") && r.contains("id+in+") && r.contains("accountEnabled")));

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

async fn listing(connector: &EntraConnector) -> MemorySink {
    let mut sink = MemorySink::new();
    run_pull(connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    sink
}

/// Issue 17 point 1: at 10,000 users and 500 groups, app scope costs no more
/// than twice the tenant's delta listing, with Graph's own paging (100 a page
/// by default, up to 999 with `$top`), and never reads a user on its own.
#[tokio::test]
async fn app_scope_at_ten_thousand_users_costs_at_most_twice_the_tenant_listing() {
    let clock = clock();
    let fake = EntraFake::start_paged(100, 999).await;
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<String> = (0..10_000).map(|i| fake.create_user(&person(&format!("u{i:05}")))).collect();
    let groups: Vec<String> = (0..500).map(|g| fake.create_group(&format!("g{g:03}"))).collect();
    for (i, user) in users.iter().enumerate() {
        fake.add_member(&groups[i % 500], user);
        fake.add_member(&groups[(i * 7 + 3) % 500], user);
    }
    // Half the users assigned directly, a fifth of the groups assigned.
    let mut in_scope: std::collections::BTreeSet<&String> = std::collections::BTreeSet::new();
    for user in users.iter().step_by(2) {
        fake.assign(user);
        in_scope.insert(user);
    }
    for (g, group) in groups.iter().enumerate().take(100) {
        fake.assign(group);
        for (i, user) in users.iter().enumerate() {
            if i % 500 == g || (i * 7 + 3) % 500 == g {
                in_scope.insert(user);
            }
        }
    }

    let secret = secret_file(&dir, "s", CLIENT_SECRET);
    let tenant = EntraConnector::new(config(&fake, EntraCredential::ClientSecret { secret }), clock.clone()).unwrap();
    let before = fake.requests().len();
    let sink = listing(&tenant).await;
    let tenant_requests = fake.requests().len() - before;
    assert_eq!(sink.users.len(), 10_000);

    let app = EntraConnector::new(app_config(&fake, &dir, SERVICE_PRINCIPAL_ID), clock.clone()).unwrap();
    let before = fake.requests().len();
    let sink = listing(&app).await;
    let app_requests = fake.requests().len() - before;
    let app_log = fake.requests()[before..].to_vec();
    eprintln!(
        "10,000 users, 500 groups: tenant scope {tenant_requests} requests; app scope ({} users in scope) {app_requests} requests, {} of them $batch",
        in_scope.len(),
        app_log.iter().filter(|r| r.contains("$batch")).count()
    );
    assert_eq!(sink.users.keys().collect::<std::collections::BTreeSet<_>>(), in_scope, "exactly the users in scope");
    assert_eq!(sink.groups.len(), 100);
    assert!(app_requests <= 2 * tenant_requests, "app scope {app_requests} requests, tenant scope {tenant_requests}");
    assert!(!app_log.iter().any(|r| r.starts_with("GET /v1.0/users/")), "a user read on its own");
    assert!(fake.max_in_flight() <= BATCH_CONCURRENCY, "{} requests in flight", fake.max_in_flight());

    // The costliest shape: every user assigned directly, each read by an `id in` filter.
    for user in users.iter().skip(1).step_by(2) {
        fake.assign(user);
    }
    let before = fake.requests().len();
    let sink = listing(&app).await;
    let all_direct = fake.requests().len() - before;
    eprintln!("app scope, all 10,000 users assigned directly: {all_direct} requests");
    assert_eq!(sink.users.len(), 10_000);
    assert!(all_direct <= 2 * tenant_requests, "app scope {all_direct} requests, tenant scope {tenant_requests}");
    assert!(fake.max_in_flight() <= BATCH_CONCURRENCY, "{} requests in flight", fake.max_in_flight());
}

/// A throttled request inside a batch (429 in a 200 batch, `Retry-After`
/// in its headers) waits exactly that long and is sent again alone; the
/// others of its batch are not.
#[tokio::test]
async fn throttled_requests_in_a_batch_wait_for_retry_after_and_only_they_are_resent() {
    let clock = clock();
    // One page of 40 assignments: their users are three `id in` reads of one batch.
    let fake = EntraFake::start(50).await;
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<String> = (0..40).map(|i| fake.create_user(&person(&format!("p{i:02}")))).collect();
    for user in &users {
        fake.assign(user);
    }
    let connector = EntraConnector::new(app_config(&fake, &dir, SERVICE_PRINCIPAL_ID), clock.clone()).unwrap();
    connector.check().await.unwrap();
    fake.fail_next_in_batch(&[Failure::RateLimited, Failure::RateLimited]);
    let before = fake.batch_items().len();
    let sink = listing(&connector).await;
    assert_eq!(sink.users.len(), 40);
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(RETRY_AFTER_SECS)], "one wait for both, as long as asked");
    let reads = fake.batch_items()[before..].iter().filter(|r| r.contains("id+in+")).count();
    assert_eq!(reads, 3 + 2, "the two throttled reads were sent again, the third was not");

    // A 5xx inside a batch backs off (no Retry-After) and is retried too.
    fake.fail_next_in_batch(&[Failure::ServerError]);
    let sink = listing(&connector).await;
    assert_eq!(sink.users.len(), 40);
    let waits = clock.sleeps();
    assert_eq!(waits.len(), 2);
    assert!(waits[1] >= Duration::from_millis(250) && waits[1] <= Duration::from_millis(500), "{waits:?}");

    // A 401 inside a batch fails the pull and drops the token: the next pull fetches one.
    let tokens = fake.token_requests();
    fake.fail_next_in_batch(&[Failure::Unauthorized]);
    let mut sink = MemorySink::new();
    let err = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Unauthorized(_)), "{err}");
    listing(&connector).await;
    assert_eq!(fake.token_requests(), tokens + 1);
}

/// A delta round whose changed users carry only some properties completes
/// them with one batched read, not one request per user.
#[tokio::test]
async fn partial_delta_users_are_completed_by_a_batched_read() {
    let clock = clock();
    let fake = EntraFake::start(10).await;
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..30).map(|i| fake.create_user(&person(&format!("d{i:02}")))).collect();
    let secret = secret_file(&dir, "s", CLIENT_SECRET);
    let connector = EntraConnector::new(config(&fake, EntraCredential::ClientSecret { secret }), clock).unwrap();
    let mut sink = MemorySink::new();
    let outcome = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    fake.set_minimal_delta(true);
    for id in &ids[..20] {
        fake.update_user(id, &FakeUser { active: false, ..person("renamed") });
    }
    fake.delete_user(&ids[29]);
    let before = fake.requests().len();
    let resume = PullMode::Resume { cursor: outcome.cursor.unwrap() };
    run_pull(&connector, resume, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.users.len(), 29);
    assert!(ids[..20].iter().all(|id| !sink.users[id].active && sink.users[id].user_name == "renamed@contoso.com"));
    let log = fake.requests()[before..].to_vec();
    assert!(!log.iter().any(|r| r.starts_with("GET /v1.0/users/") && !r.contains("/delta")), "{log:?}");
    assert!(log.iter().any(|r| r.contains("$batch")), "{log:?}");
}

/// Issue 17 points 2 and 3: behind a proxy under a path (`graph_url` and
/// `authority` with a path), every request keeps the path and the token
/// scope is Graph's, not `{graph_url}/.default`.
#[tokio::test]
async fn conformance_behind_a_proxy_under_a_path() {
    let clock = clock();
    let fake = EntraFake::start_at(3, "/graph").await;
    assert!(fake.base.ends_with("/graph"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake, EntraCredential::ClientSecret { secret: secret_file(&dir, "s", CLIENT_SECRET) });
    // The fake answers nothing outside /graph: a lost path fails the first request.
    run_conformance::<Entra>(&fake, &clock, cfg.clone(), wrong_credentials(&cfg, &dir)).await.unwrap();
    let mut app = app_config(&fake, &dir, SERVICE_PRINCIPAL_ID);
    app.graph_url = format!("{}/", fake.base);
    fake.set_auto_assign(true, true);
    fake.create_user(&person("proxied"));
    let sink = listing(&EntraConnector::new(app, clock).unwrap()).await;
    assert_eq!(sink.users.len(), 1, "app scope ($batch included) behind the proxy");
}

#[tokio::test]
async fn the_token_scope_follows_the_setting_and_a_refused_one_names_it() {
    let clock = clock();
    // A US Government tenant reached through a proxy.
    let fake = EntraFake::start_at(3, "/us-graph").await;
    fake.set_graph_resource("https://graph.microsoft.us");
    fake.create_user(&person("gov"));
    let dir = tempfile::tempdir().unwrap();
    let base = config(&fake, EntraCredential::ClientSecret { secret: secret_file(&dir, "s", CLIENT_SECRET) });
    let with_scope = |scope: Option<String>| EntraConfig { token_scope: scope, ..base.clone() };

    let ok =
        EntraConnector::new(with_scope(Some("https://graph.microsoft.us/.default".into())), clock.clone()).unwrap();
    ok.check().await.unwrap();
    assert_eq!(listing(&ok).await.users.len(), 1);

    // The default for an unknown graph_url is the global cloud's: not this tenant's resource.
    let err = EntraConnector::new(with_scope(None), clock.clone()).unwrap().check().await.unwrap_err();
    assert!(
        matches!(err, ConnectorError::Config(ref m) if m.contains("AADSTS500011") && m.contains("token_scope")),
        "{err}"
    );
    // What graph_url alone used to derive: refused as Entra refuses it.
    let derived = format!("{}/.default", fake.base);
    let err = EntraConnector::new(with_scope(Some(derived.clone())), clock.clone()).unwrap().check().await.unwrap_err();
    assert!(
        matches!(err, ConnectorError::Config(ref m) if m.contains("AADSTS500011") && m.contains(&derived)),
        "{err}"
    );
    // A scope without /.default: AADSTS1002012.
    let bare = with_scope(Some("https://graph.microsoft.us".into()));
    let err = EntraConnector::new(bare, clock.clone()).unwrap().check().await.unwrap_err();
    assert!(matches!(err, ConnectorError::Config(ref m) if m.contains("AADSTS1002012")), "{err}");
    assert!(!err.to_string().contains(CLIENT_SECRET));
}

/// Issue 17 point 7: connectors built anew for each pull share the token of
/// their credential through the pool until shortly before it expires.
#[tokio::test]
async fn tokens_outlive_a_connector_until_shortly_before_expiry() {
    let clock = clock();
    let fake = EntraFake::start(10).await;
    fake.create_user(&person("t"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake, EntraCredential::ClientSecret { secret: secret_file(&dir, "s", CLIENT_SECRET) });
    let pool = TokenPool::new();
    let connect = |cfg: &EntraConfig| EntraConnector::new(cfg.clone(), clock.clone()).unwrap().with_token_pool(&pool);
    let mut sink = MemorySink::new();
    let outcome = run_pull(&connect(&cfg), PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    let resume = PullMode::Resume { cursor: outcome.cursor.unwrap() };
    run_pull(&connect(&cfg), resume, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(fake.token_requests(), 1, "two pulls, two connectors, one token");
    // A connection test tests the credential: a fresh token, kept for the pulls after it.
    connect(&cfg).check().await.unwrap();
    assert_eq!(fake.token_requests(), 2);
    listing(&connect(&cfg)).await;
    assert_eq!(fake.token_requests(), 2);

    // The fake's tokens last 3599 s; five minutes before, a fresh one is fetched.
    clock.advance(Duration::from_secs(3599 - 300 - 1));
    listing(&connect(&cfg)).await;
    assert_eq!(fake.token_requests(), 2, "still outside the refresh margin");
    clock.advance(Duration::from_secs(2));
    listing(&connect(&cfg)).await;
    assert_eq!(fake.token_requests(), 3, "refreshed near expiry");

    // The same client with another secret is not handed the cached token.
    let wrong = config(&fake, EntraCredential::ClientSecret { secret: secret_file(&dir, "w", "not-the-secret") });
    let mut sink = MemorySink::new();
    let err = run_pull(&connect(&wrong), PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Unauthorized(_)), "{err}");
    assert_eq!(fake.token_requests(), 4);
    assert_eq!(pool.len(), 2);
}

fn tenant_connector(fake: &EntraFake, dir: &tempfile::TempDir, clock: &Arc<ManualClock>) -> EntraConnector {
    let cfg = config(fake, EntraCredential::ClientSecret { secret: secret_file(dir, "s", CLIENT_SECRET) });
    EntraConnector::new(cfg, clock.clone()).unwrap()
}

/// Issue 14: a 5xx carrying a far-off `Retry-After` (Graph's only wait
/// header: it names no remaining/reset for the directory) is an error, not
/// a throttle: a 500 and a 504 are retried within the backoff. A 503 with
/// `Retry-After` is Graph throttling, and waits for it.
#[tokio::test]
async fn a_5xx_with_a_far_off_retry_after_retries_within_the_backoff() {
    let clock = clock();
    let fake = EntraFake::start(10).await;
    let dir = tempfile::tempdir().unwrap();
    fake.create_user(&person("a"));
    let connector = tenant_connector(&fake, &dir, &clock);
    connector.check().await.unwrap();
    fake.fail_next_status(500, Some(60));
    fake.fail_next_status(504, Some(60));
    let mut sink = MemorySink::new();
    let outcome = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(sink.users.len(), 1);
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 2, "{sleeps:?}");
    assert!(sleeps[0] <= Duration::from_millis(500) && sleeps[1] <= Duration::from_secs(1), "{sleeps:?}");
    assert_eq!(outcome.waits.to_string(), "2 retries after 5xx");

    fake.fail_next_status(503, Some(2));
    let outcome = run_pull(&connector, PullMode::Refresh, &mut sink, &PullOptions::default()).await.unwrap();
    assert_eq!(clock.sleeps()[2..], [Duration::from_secs(2)]);
    assert_eq!(outcome.waits.to_string(), "waited 2.0 s for Microsoft Graph's rate limit");
}

/// The users and the groups rounds are read side by side, and a fifth of
/// the requests failing (429 and 503 with Retry-After, 500, hangs ending in
/// 504) still lists the tenant exactly.
#[tokio::test]
async fn delta_rounds_overlap_and_a_flaky_tenant_is_listed_exactly() {
    let clock = clock();
    let fake = EntraFake::start(20).await;
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<String> = (0..200).map(|i| fake.create_user(&person(&format!("f{i:03}")))).collect();
    let mut want = std::collections::BTreeSet::new();
    for g in 0..20 {
        let group = fake.create_group(&format!("g{g:02}"));
        for user in users.iter().skip(g).step_by(7) {
            fake.add_member(&group, user);
            want.insert(Membership::new(group.clone(), user.clone()));
        }
    }
    let connector = tenant_connector(&fake, &dir, &clock);
    connector.check().await.unwrap();
    fake.set_latency(Duration::from_millis(10));
    listing(&connector).await;
    assert_eq!(fake.max_in_flight(), 2, "the two rounds overlap, and only they");
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
