//! What every service gets from the runtime: auth, health, reflection, metrics, start-up errors.

use muster_proto::policy::v1 as pb;
use muster_runtime::client::{PolicyClient, channel};
use muster_tests::{DbKind, TestCluster};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

on_both_databases! {
    callers_need_a_valid_token => callers_need_a_valid_token;
    health_needs_no_token_and_reflection_lists_policy => health_needs_no_token_and_reflection_lists_policy;
    metrics_count_calls_by_code => metrics_count_calls_by_code;
    restart_keeps_data => restart_keeps_data;
    a_refused_upstream_token_is_named_and_health_follows_it => refused_upstream_token;
    a_schema_newer_than_the_binary_is_refused_unless_allowed => newer_schema;
    the_scim_port_has_a_health_path_and_counts_requests_by_route => scim_port_health_and_metrics;
}

async fn callers_need_a_valid_token(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let timeout = std::time::Duration::from_secs(5);
    for token in ["", "mst_wrong"] {
        let mut client = PolicyClient::new(channel(cluster.policy_url(), token, timeout).unwrap());
        let err = client.list_products(pb::ListProductsRequest {}).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "token {token:?}: {err:?}");
    }
    let ok = cluster.policy().list_products(pb::ListProductsRequest {}).await.unwrap();
    assert_eq!(ok.into_inner().products.len(), 4);
    cluster.stop().await;
}

async fn health_needs_no_token_and_reflection_lists_policy(kind: DbKind) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let cluster = TestCluster::start(kind).await;
    let anonymous = channel(cluster.policy_url(), "", std::time::Duration::from_secs(5)).unwrap();
    let status = HealthClient::new(anonymous)
        .check(HealthCheckRequest { service: muster_policy::GRPC_NAME.into() })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(cluster.channel(cluster.policy_url()));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"muster.policy.v1.PolicyService".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
    // Only what this port serves: not membership's or directory-sync's services.
    assert!(!names.iter().any(|n| n.contains("membership") || n.contains("directory")), "{names:?}");

    // Older tools speak v1alpha.
    use tonic_reflection::pb::v1alpha as alpha;
    let mut old = alpha::server_reflection_client::ServerReflectionClient::new(cluster.channel(cluster.policy_url()));
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut responses = old.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected v1alpha reflection answer: {response:?}");
    };
    assert!(list.service.iter().any(|s| s.name == "muster.policy.v1.PolicyService"), "{list:?}");
    cluster.stop().await;
}

async fn metrics_count_calls_by_code(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let mut policy = cluster.policy();
    policy.list_products(pb::ListProductsRequest {}).await.unwrap();
    let err = policy.get_org(pb::GetOrgRequest { id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let text = cluster.metrics.encode();
    assert!(text.contains(r#"method="ListProducts",code="Ok"} 1"#), "{text}");
    assert!(text.contains(r#"muster_grpc_server_errors_total{service="muster.policy.v1.PolicyService",method="GetOrg",code="NotFound"} 1"#), "{text}");
    cluster.stop().await;
}

async fn restart_keeps_data(kind: DbKind) {
    let mut cluster = TestCluster::start(kind).await;
    let parent = cluster
        .policy()
        .create_parent_org(pb::CreateParentOrgRequest { name: "Acme".into(), kind: pb::ParentKind::Enterprise as i32 })
        .await
        .unwrap()
        .into_inner();
    cluster.policy.take().unwrap().stop().await.unwrap();
    cluster.start_policy().await;
    let again = cluster.policy().get_parent_org(pb::GetParentOrgRequest { id: parent.id.clone() }).await.unwrap();
    assert_eq!(again.into_inner(), parent);
    cluster.stop().await;
}

#[tokio::test]
async fn an_unreachable_database_fails_start_up_naming_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = muster_policy::PolicyConfig::default();
    config.auth.token_sha256 = vec![muster_runtime::auth::hash_token("t")];
    config.database.url = muster_runtime::Secret::new("postgres://muster:hunter2@127.0.0.1:1/policy");
    let err = muster_policy::run(config, listener, std::future::pending(), Default::default()).await.unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("127.0.0.1:1/policy"), "{shown}");
    assert!(!shown.contains("hunter2"), "password leaked: {shown}");
}

#[tokio::test]
async fn a_bad_database_url_fails_start_up() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = muster_policy::PolicyConfig::default();
    config.auth.token_sha256 = vec![muster_runtime::auth::hash_token("t")];
    config.database.url = muster_runtime::Secret::new("mysql://h/db");
    let err = muster_policy::run(config, listener, std::future::pending(), Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("expected sqlite://PATH"), "{err}");
}

#[tokio::test]
async fn no_tokens_configured_fails_start_up() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err =
        muster_policy::run(Default::default(), listener, std::future::pending(), Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("auth.token_sha256"), "{err}");
}

async fn serving_status(url: &str, service: &str) -> i32 {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let anonymous = channel(url, "", std::time::Duration::from_secs(5)).unwrap();
    match HealthClient::new(anonymous).check(HealthCheckRequest { service: service.into() }).await {
        Ok(r) => r.into_inner().status,
        Err(_) => -1,
    }
}

/// Policy comes back accepting other callers only: membership and directory-sync say
/// that policy refuses *their* token, in their health and in the errors of calls that
/// needed policy, and recover by themselves when policy accepts it again.
async fn refused_upstream_token(kind: DbKind) {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut cluster = TestCluster::start(kind).await;
    let membership_url = cluster.membership_url().to_string();
    let directory_url = cluster.directory_url().to_string();
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    assert_eq!(serving_status(&membership_url, muster_membership::GRPC_NAME).await, serving);
    // An org membership has never seen: adding to it needs policy.
    let (_, org) = cluster
        .enterprise_org(pb::SettingsInput { mode: pb::ProvisioningMode::Manual as i32, ..Default::default() })
        .await;

    let addr: std::net::SocketAddr = cluster.policy_url().trim_start_matches("http://").parse().unwrap();
    cluster.stop_policy().await;
    let mut config = cluster.policy_config();
    config.auth = muster_runtime::config::AuthConfig {
        token_sha256: vec![muster_runtime::auth::hash_token("mst_somebody_else")],
    };
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let other_policy = tokio::spawn(muster_policy::run(
        config,
        listener,
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
        muster_runtime::metrics::RpcMetrics::new(),
    ));

    super::support::until("membership and directory-sync to report NOT_SERVING", || async {
        serving_status(&membership_url, muster_membership::GRPC_NAME).await == not_serving
            && serving_status(&directory_url, muster_directory_sync::GRPC_NAME).await == not_serving
    })
    .await;
    let err = cluster
        .membership()
        .add_member(muster_proto::membership::v1::AddMemberRequest {
            org_id: org.clone(),
            email: "ann@example.com".into(),
            actor: super::support::admin(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("policy refused membership's token (check [policy] token in membership's config)"),
        "{}",
        err.message()
    );

    let _ = stop.send(true);
    other_policy.await.unwrap().unwrap();
    cluster.start_policy().await;
    super::support::until("membership and directory-sync to be SERVING again", || async {
        serving_status(&membership_url, muster_membership::GRPC_NAME).await == serving
            && serving_status(&directory_url, muster_directory_sync::GRPC_NAME).await == serving
    })
    .await;
    cluster.stop().await;
}

/// A release older than the database's schema does not start on it by accident.
async fn newer_schema(kind: DbKind) {
    use diesel::RunQueryDsl;
    let mut cluster = TestCluster::start(kind).await;
    let mut config = cluster.policy_config();
    cluster.stop_policy().await;
    let db = muster_runtime::Db::open(&config.database).await.unwrap();
    db.run(|conn| {
        diesel::sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES ('99991231000000')")
            .execute(conn)
            .map_err(muster_runtime::DbError::Query)
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = muster_policy::run(config.clone(), listener, async {}, muster_runtime::metrics::RpcMetrics::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("newer than this binary") && refused.contains("99991231000000"), "{refused}");
    assert!(refused.contains("allow_newer_schema"), "{refused}");

    // Told to, it runs (a deliberate rollback).
    config.database.allow_newer_schema = true;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(muster_policy::run(
        config,
        listener,
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
        muster_runtime::metrics::RpcMetrics::new(),
    ));
    muster_tests::wait_serving(&url, muster_policy::GRPC_NAME).await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    cluster.stop().await;
}

/// A load balancer's probe needs no token; every SCIM request is counted by method,
/// route template and status, never by raw path.
async fn scim_port_health_and_metrics(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let scim = cluster.scim_url("d-probe");
    let base = scim.split("/scim/v2/").next().unwrap().to_string();
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let r = http.get(format!("{scim}/Users/secret-looking-id-42")).bearer_auth("nope").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let text = cluster.metrics.encode();
    assert!(
        text.contains(
            r#"muster_directory_scim_request_duration_seconds_count{method="GET",route="/scim/v2/{directory}/Users/{id}",status="401"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="/healthz",status="200"} 1"#), "{text}");
    assert!(!text.contains("secret-looking-id-42") && !text.contains("d-probe"), "raw paths never become labels");
    cluster.stop().await;
}

/// The SCIM port's limits, each broken on purpose: a token over its rate gets SCIM's
/// 429 with Retry-After in whole seconds, a request whose body never finishes gets 408,
/// a silent connection is closed, and connections over the maximum wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scim_port_limits_rate_time_and_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = TestCluster::start(DbKind::Sqlite).await;
    let mut config = cluster.directory_config();
    config.http.token_requests_per_second = 1;
    config.http.token_burst = 2;
    config.http.request_timeout_secs = 1;
    config.http.idle_timeout_secs = 3;
    config.http.max_connections = 2;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(muster_directory_sync::run(
        config,
        muster_directory_sync::Listeners { grpc, http },
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
        muster_runtime::metrics::RpcMetrics::new(),
    ));
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    super::support::until("the SCIM port", || async { client.get(format!("{base}/healthz")).send().await.is_ok() })
        .await;

    // Rate: a burst of 2, then 429 with a whole-second Retry-After, as SCIM JSON.
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let r = client.get(format!("{base}/scim/v2/d1/Users")).bearer_auth("tok-a").send().await.unwrap();
        statuses.push(r.status().as_u16());
        last = Some(r);
    }
    assert_eq!(&statuses[..2], &[401, 401], "within the burst the router answers: {statuses:?}");
    assert_eq!(statuses[3], 429, "{statuses:?}");
    let last = last.unwrap();
    let retry: u64 = last.headers()["retry-after"].to_str().unwrap().parse().expect("whole seconds");
    assert!(retry >= 1);
    let body: serde_json::Value = last.json().await.unwrap();
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert_eq!(body["status"], "429");
    // Another token has its own share; the probe has none to lose.
    let other = client.get(format!("{base}/scim/v2/d1/Users")).bearer_auth("tok-b").send().await.unwrap();
    assert_eq!(other.status(), 401);
    assert_eq!(client.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);

    // A body that never finishes: 408 after the request deadline (a real directory, so
    // the router reads the body instead of refusing the token first).
    let (parent, _) = cluster
        .enterprise_org(pb::SettingsInput { mode: pb::ProvisioningMode::Manual as i32, ..Default::default() })
        .await;
    let created = cluster
        .directory()
        .create_directory(muster_proto::directory::v1::CreateDirectoryRequest {
            parent_id: parent,
            kind: muster_proto::directory::v1::DirectoryKind::Scim as i32,
            display_name: "Slow IdP".into(),
            actor: super::support::admin(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let dir = created.directory.unwrap().id;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /scim/v2/{dir}/Users HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/scim+json\r\ncontent-length: 100\r\n\r\n{{\"userName\"",
        created.scim_token
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), slow.read(&mut answer)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    drop(slow);

    // A silent connection is closed after the idle timeout.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), silent.read(&mut answer)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed, not answered: {n:?}");
    drop(silent);

    // Two connections held open: a third waits until one goes (they close when idle).
    let a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let third = reqwest::Client::new().get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(third.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(500), "served only once a slot freed");
    drop((a, b));

    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    cluster.stop().await;
}
