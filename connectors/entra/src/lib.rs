//! The Microsoft Entra ID pull connector: reads a tenant's users and groups
//! through Microsoft Graph delta queries (`users/delta`, `groups/delta` with
//! `$select`), following `@odata.nextLink` to the `@odata.deltaLink` that
//! becomes the cursor. `members@delta` changes are applied as they come (a
//! large group spans several pages), `@removed` entries become removals, and
//! a 410 (expired delta token) asks for a full resync. Authenticates with
//! client credentials, by secret or by certificate (an RS256 client
//! assertion), against a configurable authority for national clouds.
//! Throttling (429 with `Retry-After`) is obeyed exactly by the core client.
//!
//! With [`EntraScope::App`] the connector pulls only the users and groups
//! assigned to one enterprise application (its service principal's
//! `appRoleAssignedTo`), assigned groups expanded to their direct user
//! members. Graph has no change feed for that, so every app-scope pull is a
//! full listing (`Resume` answers `ResyncRequired`) and the sink's sweep
//! removes whoever was unassigned.

/// The fake server of this crate's tests (`tests/fake`), compiled in for other
/// crates' end-to-end tests with the `fake` feature. The file stays where the
/// connector's own tests include it, so both build the same fake.
#[cfg(feature = "fake")]
#[path = "../tests/fake/mod.rs"]
pub mod testing;

use std::collections::BTreeSet;
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
/// The extra application permission of [`EntraScope::App`]: listing a service
/// principal's `appRoleAssignedTo` (least privileged per Graph's "List
/// appRoleAssignments granted for a service principal" page).
pub const APP_SCOPE_PERMISSION: &str = "Application.Read.All";
/// The group properties read for an assigned group in app scope.
pub const APP_GROUP_SELECT: &str = "id,displayName,description";

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
    /// Which users and groups are pulled; the whole tenant when absent.
    #[serde(default)]
    pub scope: EntraScope,
    #[serde(default)]
    pub http: HttpSettings,
}

/// Which users and groups the connector pulls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EntraScope {
    /// Every user and group of the tenant, by delta queries (incremental).
    #[default]
    Tenant,
    /// The users and groups assigned to one enterprise application: the
    /// object id of its service principal (not the application/client id).
    /// Assigned groups are expanded to their direct user members (nested
    /// groups are not). Every pull is a full listing.
    App { service_principal_id: String },
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
        if let EntraScope::App { service_principal_id } = &config.scope {
            let ok = !service_principal_id.is_empty()
                && service_principal_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(ConnectorError::Config(format!(
                    "scope.service_principal_id {service_principal_id:?} is not a service principal object id"
                )));
            }
        }
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

    /// One user's profile, with the same `$select` as the delta path; None
    /// when the user is gone by now.
    async fn user_profile(&self, id: &str) -> Result<Option<User>, ConnectorError> {
        match self.get(self.first_round(&format!("/v1.0/users/{id}"), USER_SELECT)?).await {
            Ok(full) => Ok(graph_user(full)),
            Err(ConnectorError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The full listing of app scope. Pages through
    /// `GET /servicePrincipals/{id}/appRoleAssignedTo` (Graph "List
    /// appRoleAssignments granted for a service principal": items with
    /// `principalId` and `principalType` `User` | `Group` | `ServicePrincipal`)
    /// to the end, delivering directly assigned users as it goes; then each
    /// assigned group (`GET /groups/{id}`) and its direct members (`GET
    /// /groups/{id}/members`, Graph "List group members", paged by
    /// `@odata.nextLink`), delivering the user members and their memberships.
    /// Nested groups and service principals are not people and are skipped.
    /// Profiles are read one `GET /users/{id}` per in-scope user (no `$batch`):
    /// simple, throttled by the core client, and each user is read once.
    async fn app_listing(&self, service_principal: &str, out: &mut PageWriter<'_>) -> Result<(), ConnectorError> {
        let mut seen_users = BTreeSet::new();
        // Users whose profile read found them gone: no membership for them.
        let mut gone_users = BTreeSet::new();
        let mut groups: Vec<String> = Vec::new();
        let mut url = self.url(&format!("/v1.0/servicePrincipals/{service_principal}/appRoleAssignedTo"))?;
        loop {
            let body = self.get(url).await.map_err(|e| app_scope_error(e, service_principal))?;
            let mut page = Page::default();
            for item in body.get("value").and_then(Value::as_array).into_iter().flatten() {
                let Some(id) = text(item, "principalId") else { continue };
                match item.get("principalType").and_then(Value::as_str) {
                    Some("User") if seen_users.insert(id.clone()) => match self.user_profile(&id).await? {
                        Some(user) => page.users.push(user),
                        None => {
                            gone_users.insert(id);
                        }
                    },
                    Some("Group") if !groups.contains(&id) => groups.push(id),
                    _ => {}
                }
            }
            out.write(page).await?;
            match odata_next_link(&body) {
                Some(next) => url = self.same_origin(next)?,
                None => break,
            }
        }
        for group_id in groups {
            let group_url = self.first_round(&format!("/v1.0/groups/{group_id}"), APP_GROUP_SELECT)?;
            let raw = match self.get(group_url).await {
                Ok(raw) => raw,
                // Deleted since the assignments were read: not in scope any more.
                Err(ConnectorError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let Some(name) = text(&raw, "displayName") else { continue };
            let description = text(&raw, "description");
            let mut page =
                Page { groups: vec![Group { id: group_id.clone(), name, description, raw }], ..Page::default() };
            let mut url = self.first_round(&format!("/v1.0/groups/{group_id}/members"), "id")?;
            loop {
                let body = match self.get(url).await {
                    Ok(body) => body,
                    Err(ConnectorError::NotFound(_)) => break,
                    Err(e) => return Err(e),
                };
                for member in body.get("value").and_then(Value::as_array).into_iter().flatten() {
                    if member["@odata.type"] != "#microsoft.graph.user" {
                        continue;
                    }
                    let Some(user) = text(member, "id") else { continue };
                    if seen_users.insert(user.clone()) {
                        match self.user_profile(&user).await? {
                            Some(profile) => page.users.push(profile),
                            None => {
                                gone_users.insert(user.clone());
                            }
                        }
                    }
                    if gone_users.contains(&user) {
                        continue;
                    }
                    page.memberships.push(MembershipChange::Added(Membership::new(group_id.clone(), user)));
                }
                out.write(std::mem::take(&mut page)).await?;
                match odata_next_link(&body) {
                    Some(next) => url = self.same_origin(next)?,
                    None => break,
                }
            }
        }
        Ok(())
    }
}

/// An app-scope error naming the service principal and the extra permission.
fn app_scope_error(error: ConnectorError, service_principal: &str) -> ConnectorError {
    match error {
        ConnectorError::NotFound(detail) => {
            ConnectorError::NotFound(format!("service principal {service_principal} not found: {detail}"))
        }
        ConnectorError::Forbidden(detail) => ConnectorError::Forbidden(format!(
            "{detail}; app scope reads service principal {service_principal} and its appRoleAssignedTo, which needs {APP_SCOPE_PERMISSION}"
        )),
        e => e,
    }
}

#[async_trait]
impl PullConnector for EntraConnector {
    fn kind(&self) -> &'static str {
        "entra"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { incremental: matches!(self.config.scope, EntraScope::Tenant) }
    }

    async fn check(&self) -> Result<CheckReport, ConnectorError> {
        self.access_token().await?;
        let mut users = self.url("/v1.0/users")?;
        users.query_pairs_mut().append_pair("$top", "1").append_pair("$select", "id");
        self.get(users).await?;
        let mut groups = self.url("/v1.0/groups")?;
        groups.query_pairs_mut().append_pair("$top", "1").append_pair("$select", "id");
        self.get(groups).await?;
        if let EntraScope::App { service_principal_id: sp } = &self.config.scope {
            let principal = self.first_round(&format!("/v1.0/servicePrincipals/{sp}"), "id,appId,displayName")?;
            let body = self.get(principal).await.map_err(|e| app_scope_error(e, sp))?;
            let mut assigned = self.url(&format!("/v1.0/servicePrincipals/{sp}/appRoleAssignedTo"))?;
            assigned.query_pairs_mut().append_pair("$top", "1");
            self.get(assigned).await.map_err(|e| app_scope_error(e, sp))?;
            let name = text(&body, "displayName").unwrap_or_default();
            return Ok(CheckReport {
                summary: format!(
                    "entra tenant {}: app {name:?} (service principal {sp}) assignments, users and groups readable",
                    self.config.tenant_id
                ),
            });
        }
        Ok(CheckReport { summary: format!("entra tenant {}: users and groups readable", self.config.tenant_id) })
    }

    async fn pull(&self, mode: &PullMode, out: &mut PageWriter<'_>) -> Result<Option<Cursor>, ConnectorError> {
        if let EntraScope::App { service_principal_id } = &self.config.scope {
            if let PullMode::Resume { .. } = mode {
                return Err(ConnectorError::ResyncRequired(
                    "entra app scope has no change feed: every pull is a full listing".into(),
                ));
            }
            self.app_listing(service_principal_id, out).await?;
            return Ok(None);
        }
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
