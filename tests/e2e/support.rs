//! What the end-to-end stories share: waiting on a condition, actors and group refs,
//! a SCIM client for one directory, and the Okta, Entra and Google fakes with
//! directory configs pointing at them (a connector whose fake is built on the kit's
//! scaffolding ships this as `testing::deployment`, like the example connector).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use muster_connector::ManualClock;
use muster_connector::conformance::{FakeDeployment, FakeUser};
use muster_proto::common::v1 as common;
use serde_json::{Value, json};

/// Longest any wait may take before the test fails (a hang is a failure, not a pass).
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Polls `check` until it holds, yielding between attempts.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = tokio::time::timeout(PATIENCE, async {
        while !check().await {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(waited.is_ok(), "gave up waiting: {what}");
}

/// The administrator the tests act as.
pub fn admin() -> Option<common::Actor> {
    Some(common::Actor { kind: Some(common::actor::Kind::AdminId("tester".into())) })
}

/// A group named (not by id), as JIT claims and the tests' mappings name them.
pub fn named(name: &str) -> common::GroupRef {
    common::GroupRef { id: String::new(), name: name.into() }
}

/// A SCIM client for one directory.
pub struct Scim {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Scim {
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json");
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn create_user(&self, user_name: &str) -> String {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "name": {"givenName": "Test", "familyName": user_name},
            "emails": [{"value": user_name, "type": "work", "primary": true}],
            "active": true
        });
        let (status, v) = self.send(reqwest::Method::POST, "/Users", Some(body)).await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn set_active(&self, id: &str, active: bool) {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": active}}]
        });
        let (status, v) = self.send(reqwest::Method::PATCH, &format!("/Users/{id}"), Some(body)).await;
        assert_eq!(status, 200, "{v}");
    }

    pub async fn create_group(&self, name: &str, members: &[&str]) -> String {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
            "members": members
        });
        let (status, v) = self.send(reqwest::Method::POST, "/Groups", Some(body)).await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn group_members(&self, group: &str, op: &str, members: &[&str]) {
        let value: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": op, "path": "members", "value": value}]
        });
        let (status, v) = self.send(reqwest::Method::PATCH, &format!("/Groups/{group}"), Some(body)).await;
        assert!(status == 200 || status == 204, "{status} {v}");
    }
}

/// A person of the vendor fakes, `NAME@example.com`.
pub fn person(name: &str) -> FakeUser {
    FakeUser {
        user_name: format!("{name}@example.com"),
        given_name: name.to_uppercase(),
        family_name: "Doe".into(),
        active: true,
    }
}

/// Okta's fake (whole org, API token in a file) and a config pointing at it.
pub async fn okta(clock: Arc<ManualClock>) -> FakeDeployment {
    use muster_connector_okta::testing::{API_TOKEN, OktaFake};
    let (secrets, file) = secrets();
    let fake = OktaFake::start(2, false, clock).await;
    let token = file(&secrets, "okta-token", API_TOKEN);
    let config = json!({"org_url": fake.base, "page_size": 2, "auth": {"type": "api_token", "token": {"file": token}}});
    FakeDeployment { kind: "okta", fake: Arc::new(fake), config, keep: Box::new(secrets) }
}

async fn entra_fake(app_scope: bool) -> FakeDeployment {
    use muster_connector_entra::testing::{CLIENT_ID, CLIENT_SECRET, EntraFake, SERVICE_PRINCIPAL_ID, TENANT};
    let (secrets, file) = secrets();
    let fake = EntraFake::start(2).await;
    let secret = file(&secrets, "entra-secret", CLIENT_SECRET);
    let mut config = json!({
        "tenant_id": TENANT, "client_id": CLIENT_ID,
        "authority": fake.base, "graph_url": fake.base,
        "credential": {"type": "client_secret", "secret": {"file": secret}}
    });
    if app_scope {
        // People are in scope through the groups assigned to the app.
        fake.set_auto_assign(false, true);
        config["scope"] = json!({"type": "app", "service_principal_id": SERVICE_PRINCIPAL_ID});
    }
    FakeDeployment { kind: "entra", fake: Arc::new(fake), config, keep: Box::new(secrets) }
}

/// Entra's fake (whole tenant, client secret in a file) and a config pointing at it.
pub async fn entra(_clock: Arc<ManualClock>) -> FakeDeployment {
    entra_fake(false).await
}

/// Entra scoped to the users and groups assigned to one app (every pull a full listing).
pub async fn entra_app(_clock: Arc<ManualClock>) -> FakeDeployment {
    entra_fake(true).await
}

/// Google's fake (whole customer, service-account key in a file) and a config pointing at it.
pub async fn google(_clock: Arc<ManualClock>) -> FakeDeployment {
    use muster_connector_google::testing::{ADMIN, GoogleFake};
    let (secrets, file) = secrets();
    let fake = GoogleFake::start(2).await;
    let key = file(&secrets, "google-key.json", &fake.key_json());
    let config = json!({"service_account_key": {"file": key}, "admin_email": ADMIN, "api_url": fake.base});
    FakeDeployment { kind: "google", fake: Arc::new(fake), config, keep: Box::new(secrets) }
}

/// A temp dir for secret files, and a writer of one (its path).
fn secrets() -> (tempfile::TempDir, impl Fn(&tempfile::TempDir, &str, &str) -> String) {
    let file = |dir: &tempfile::TempDir, name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().to_string()
    };
    (tempfile::tempdir().unwrap(), file)
}
