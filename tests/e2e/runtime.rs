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
