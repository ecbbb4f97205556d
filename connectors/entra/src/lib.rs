//! The Microsoft Entra ID pull connector: reads a tenant's users and groups
//! through Microsoft Graph delta queries (`users/delta`, `groups/delta` with
//! `$select`), following `@odata.nextLink` to the `@odata.deltaLink` that
//! becomes the cursor. `members@delta` changes are applied as they come (a
//! large group spans several pages), `@removed` entries become removals, and
//! a 410 (expired delta token) asks for a full resync. Authenticates with
//! client credentials, by secret or by certificate (an RS256 client
//! assertion), against a configurable authority for national clouds.
//! Throttling (429 with `Retry-After`) is obeyed exactly by the core client.

/// The fake server of this crate's tests (`tests/fake`), compiled in for other
/// crates' end-to-end tests with the `fake` feature. The file stays where the
/// connector's own tests include it, so both build the same fake.
#[cfg(feature = "fake")]
#[path = "../tests/fake/mod.rs"]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use muster_connector::auth::random_jti;
use muster_connector::http::{ApiResponse, Url, Verdict, odata_delta_link, odata_next_link};
use muster_connector::{
    ApiClient, ApiRequest, Assignment, Capabilities, CheckReport, Clock, ConnectorError, Cursor, Group, HttpSettings,
    Membership, MembershipChange, Page, PageWriter, PullConnector, PullMode, Removal, RemovalReason, Secret, SecretRef,
    TokenCache, User, fetch_oauth_token, sign_rs256,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The user properties asked for (`accountEnabled` included: a disabled
/// account is an inactive user).
pub const USER_SELECT: &str = "id,userPrincipalName,mail,givenName,surname,displayName,accountEnabled";
/// The group properties asked for; `members` yields `members@delta`.
pub const GROUP_SELECT: &str = "id,displayName,description,members";
/// Application permissions the app registration needs (admin consented).
pub const ENTRA_PERMISSIONS: [&str; 2] = ["User.Read.All", "GroupMember.Read.All"];

/// One Entra tenant to pull from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraConfig {
    /// Directory (tenant) id or primary domain.
    pub tenant_id: String,
    /// Application (client) id of the app registration.
    pub client_id: String,
    pub credential: EntraCredential,
    /// `https://login.microsoftonline.com`; `https://login.microsoftonline.us`
    /// or `https://login.chinacloudapi.cn` for national clouds.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// `https://graph.microsoft.com` (or `graph.microsoft.us`, `microsoftgraph.chinacloudapi.cn`).
    #[serde(default = "default_graph")]
    pub graph_url: String,
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}

fn default_graph() -> String {
    "https://graph.microsoft.com".into()
}

/// The app registration's credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EntraCredential {
    ClientSecret {
        secret: SecretRef,
    },
    /// A certificate uploaded to the app registration: its private key (PEM)
    /// and the SHA-1 thumbprint the portal shows (hex).
    Certificate {
        private_key: SecretRef,
        thumbprint: String,
    },
}

enum Credential {
    Secret(Secret),
    Certificate { key: Secret, x5t: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct DeltaCursor {
    users: String,
    groups: String,
}

/// A pull connector for one Entra tenant.
pub struct EntraConnector {
    config: EntraConfig,
    graph: Url,
    token_url: Url,
    api: ApiClient,
    credential: Credential,
    tokens: TokenCache,
}

impl std::fmt::Debug for EntraConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraConnector").field("tenant", &self.config.tenant_id).finish_non_exhaustive()
    }
}

/// Graph's error body `{"error": {"code", "message"}}` folded into the message.
fn graph_verdict(response: &ApiResponse) -> Verdict {
    let status = response.status.as_u16();
    if response.status.is_success() {
        return Verdict::Accept;
    }
    if matches!(status, 429 | 500 | 502 | 503 | 504) {
        return Verdict::Retry;
    }
    let body: Value = serde_json::from_slice(&response.body).unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or("");
    let message = body["error"]["message"].as_str().unwrap_or("");
    let detail = format!("{status} {}: {code}: {message}", response.url.path());
    Verdict::Fail(match status {
        401 => ConnectorError::Unauthorized(detail),
        403 => ConnectorError::Forbidden(format!("{detail} (needs {})", ENTRA_PERMISSIONS.join(", "))),
        404 => ConnectorError::NotFound(detail),
        410 => ConnectorError::ResyncRequired(detail),
        _ if code == "syncStateNotFound" || code == "resyncRequired" => ConnectorError::ResyncRequired(detail),
        _ => ConnectorError::Http { status, detail },
    })
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn removed_reason(value: &Value) -> Option<RemovalReason> {
    let removed = value.get("@removed")?;
    Some(if removed["reason"] == "deleted" { RemovalReason::Deleted } else { RemovalReason::SoftDeleted })
}

fn graph_user(raw: Value) -> Option<User> {
    let id = text(&raw, "id")?;
    let user_name = text(&raw, "userPrincipalName")?;
    let active = raw.get("accountEnabled")?.as_bool()?;
    Some(User {
        id,
        user_name,
        email: text(&raw, "mail"),
        given_name: text(&raw, "givenName"),
        family_name: text(&raw, "surname"),
        display_name: text(&raw, "displayName"),
        active,
        assignment: Assignment::Scope,
        raw,
    })
}

impl EntraConnector {
    pub fn new(config: EntraConfig, clock: Arc<dyn Clock>) -> Result<Self, ConnectorError> {
        let graph = Url::parse(&config.graph_url)
            .map_err(|e| ConnectorError::Config(format!("graph_url {:?}: {e}", config.graph_url)))?;
        let token_url =
            Url::parse(&format!("{}/{}/oauth2/v2.0/token", config.authority.trim_end_matches('/'), config.tenant_id))
                .map_err(|e| ConnectorError::Config(format!("authority {:?}: {e}", config.authority)))?;
        let credential = match &config.credential {
            EntraCredential::ClientSecret { secret } => Credential::Secret(secret.resolve()?),
            EntraCredential::Certificate { private_key, thumbprint } => {
                let raw = hex::decode(thumbprint.replace([':', ' '], ""))
                    .map_err(|e| ConnectorError::Config(format!("certificate thumbprint is not hex: {e}")))?;
                Credential::Certificate {
                    key: private_key.resolve()?,
                    x5t: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
                }
            }
        };
        let api = ApiClient::new(&config.http, clock)?;
        Ok(Self { config, graph, token_url, api, credential, tokens: TokenCache::new(Duration::from_secs(300)) })
    }

    async fn access_token(&self) -> Result<Secret, ConnectorError> {
        let now = self.api.clock().now();
        self.tokens
            .get(now, || async {
                let scope = format!("{}/.default", self.config.graph_url.trim_end_matches('/'));
                let mut form = vec![
                    ("client_id".to_owned(), self.config.client_id.clone()),
                    ("scope".to_owned(), scope),
                    ("grant_type".to_owned(), "client_credentials".to_owned()),
                ];
                match &self.credential {
                    Credential::Secret(secret) => form.push(("client_secret".into(), secret.expose().to_owned())),
                    Credential::Certificate { key, x5t } => {
                        let claims = serde_json::json!({
                            "aud": self.token_url.as_str(),
                            "iss": self.config.client_id,
                            "sub": self.config.client_id,
                            "jti": random_jti(),
                            "nbf": now.timestamp(),
                            "iat": now.timestamp(),
                            "exp": now.timestamp() + 600,
                        });
                        let assertion = sign_rs256(&claims, key, None, Some(x5t.clone()))?;
                        form.push((
                            "client_assertion_type".into(),
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                        ));
                        form.push(("client_assertion".into(), assertion.expose().to_owned()));
                    }
                }
                fetch_oauth_token(&self.api, self.token_url.clone(), form).await
            })
            .await
    }

    fn url(&self, path: &str) -> Result<Url, ConnectorError> {
        self.graph.join(path).map_err(|e| ConnectorError::Config(format!("url {path}: {e}")))
    }

    fn same_origin(&self, link: &str) -> Result<Url, ConnectorError> {
        let url = Url::parse(link).map_err(|e| ConnectorError::Protocol(format!("link {e}")))?;
        if url.origin() == self.graph.origin() {
            Ok(url)
        } else {
            Err(ConnectorError::Protocol("graph returned a link to another origin".into()))
        }
    }

    async fn get(&self, url: Url) -> Result<Value, ConnectorError> {
        let token = self.access_token().await?;
        let request = ApiRequest::get(url).header("accept", "application/json").authorization("Bearer", &token);
        let response = self.api.send_with(&request, &graph_verdict).await;
        if let Err(ConnectorError::Unauthorized(_)) = response {
            self.tokens.invalidate().await;
        }
        response?.json()
    }

    /// Reads one delta round from `start` to its deltaLink, a sink page per Graph page.
    async fn delta_round(&self, start: Url, groups: bool, out: &mut PageWriter<'_>) -> Result<String, ConnectorError> {
        let mut url = start;
        loop {
            let body = self.get(url).await?;
            let items = body.get("value").and_then(Value::as_array).cloned().unwrap_or_default();
            let page = if groups { self.groups_page(items) } else { self.users_page(items).await? };
            out.write(page).await?;
            if let Some(next) = odata_next_link(&body) {
                url = self.same_origin(next)?;
            } else if let Some(delta) = odata_delta_link(&body) {
                self.same_origin(delta)?;
                return Ok(delta.to_owned());
            } else {
                return Err(ConnectorError::Protocol("delta page with neither nextLink nor deltaLink".into()));
            }
        }
    }

    async fn users_page(&self, items: Vec<Value>) -> Result<Page, ConnectorError> {
        let mut page = Page::default();
        for item in items {
            let Some(id) = text(&item, "id") else { continue };
            if let Some(reason) = removed_reason(&item) {
                page.removed_users.push(Removal::new(id, reason));
                continue;
            }
            match graph_user(item) {
                Some(user) => page.users.push(user),
                None => {
                    // A change may carry only what changed: read the whole user.
                    let mut url = self.url(&format!("/v1.0/users/{id}"))?;
                    url.query_pairs_mut().append_pair("$select", USER_SELECT);
                    match self.get(url).await {
                        Ok(full) => page.users.extend(graph_user(full)),
                        Err(ConnectorError::NotFound(_)) => {
                            page.removed_users.push(Removal::new(id, RemovalReason::Deleted))
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(page)
    }

    fn groups_page(&self, items: Vec<Value>) -> Page {
        let mut page = Page::default();
        for item in items {
            let Some(id) = text(&item, "id") else { continue };
            if let Some(reason) = removed_reason(&item) {
                page.removed_groups.push(Removal::new(id, reason));
                continue;
            }
            if let Some(name) = text(&item, "displayName") {
                let description = text(&item, "description");
                let mut raw = item.clone();
                if let Some(obj) = raw.as_object_mut() {
                    obj.remove("members@delta");
                }
                page.groups.push(Group { id: id.clone(), name, description, raw });
            }
            for member in item.get("members@delta").and_then(Value::as_array).into_iter().flatten() {
                if member["@odata.type"] != "#microsoft.graph.user" {
                    continue;
                }
                let Some(user) = text(member, "id") else { continue };
                let m = Membership::new(id.clone(), user);
                page.memberships.push(if member.get("@removed").is_some() {
                    MembershipChange::Removed(m)
                } else {
                    MembershipChange::Added(m)
                });
            }
        }
        page
    }

    fn first_round(&self, path: &str, select: &str) -> Result<Url, ConnectorError> {
        let mut url = self.url(path)?;
        url.query_pairs_mut().append_pair("$select", select);
        Ok(url)
    }
}

#[async_trait]
impl PullConnector for EntraConnector {
    fn kind(&self) -> &'static str {
        "entra"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { incremental: true }
    }

    async fn check(&self) -> Result<CheckReport, ConnectorError> {
        self.access_token().await?;
        let mut users = self.url("/v1.0/users")?;
        users.query_pairs_mut().append_pair("$top", "1").append_pair("$select", "id");
        self.get(users).await?;
        let mut groups = self.url("/v1.0/groups")?;
        groups.query_pairs_mut().append_pair("$top", "1").append_pair("$select", "id");
        self.get(groups).await?;
        Ok(CheckReport { summary: format!("entra tenant {}: users and groups readable", self.config.tenant_id) })
    }

    async fn pull(&self, mode: &PullMode, out: &mut PageWriter<'_>) -> Result<Option<Cursor>, ConnectorError> {
        let (users_start, groups_start) = match mode {
            PullMode::Refresh => (
                self.first_round("/v1.0/users/delta", USER_SELECT)?,
                self.first_round("/v1.0/groups/delta", GROUP_SELECT)?,
            ),
            PullMode::Resume { cursor } => {
                let state: DeltaCursor = cursor.decode()?;
                (self.same_origin(&state.users)?, self.same_origin(&state.groups)?)
            }
        };
        let users = self.delta_round(users_start, false, out).await?;
        let groups = self.delta_round(groups_start, true, out).await?;
        Ok(Some(Cursor::encode(&DeltaCursor { users, groups })?))
    }
}
