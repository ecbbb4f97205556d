//! The Microsoft Entra ID pull connector: reads a tenant's users and groups
//! through Microsoft Graph delta queries (`users/delta`, `groups/delta` with
//! `$select`), following `@odata.nextLink` to the `@odata.deltaLink` that
//! becomes the cursor. `members@delta` changes are applied as they come (a
//! large group spans several pages), `@removed` entries become removals, and
//! a 410 (expired delta token) asks for a full resync. The users and the
//! groups rounds are read side by side (two endpoint families), so a page
//! waiting out a retry in one does not hold up the other. Authenticates with
//! client credentials, by secret or by certificate (an RS256 client
//! assertion), against a configurable authority for national clouds.
//! Throttling (429, or 503 with `Retry-After`) is obeyed exactly by the core
//! client; 5xx back off.
//!
//! With [`EntraScope::App`] the connector pulls only the users and groups
//! assigned to one enterprise application (its service principal's
//! `appRoleAssignedTo`), assigned groups expanded to their direct user
//! members, the profiles read through JSON batching (module `app_scope`). Graph
//! has no change feed for that, so every app-scope pull is a full listing
//! (`Resume` answers `ResyncRequired`) and the sink's sweep removes whoever
//! was unassigned.
//!
//! The token scope follows the cloud of `graph_url` (or is set), the base
//! URLs keep their path, and the access token can outlive the connector
//! through a [`TokenPool`].

/// The fake server of this crate's tests (`tests/fake`), compiled in for other
/// crates' end-to-end tests with the `fake` feature. The file stays where the
/// connector's own tests include it, so both build the same fake.
#[cfg(feature = "fake")]
#[path = "../tests/fake/mod.rs"]
pub mod testing;

mod app_scope;
mod batch;
mod config;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use futures::future::BoxFuture;
use muster_connector::auth::random_jti;
use muster_connector::http::{ApiResponse, Url, Verdict, odata_delta_link, odata_next_link};
use muster_connector::{
    ApiClient, ApiRequest, Assignment, BaseUrl, Capabilities, CheckReport, Clock, ConnectorError, CredentialKey,
    Cursor, Group, Membership, MembershipChange, Page, PageWriter, PullConnector, PullMode, ReadQueue, Removal,
    RemovalReason, Secret, TokenCache, TokenPool, User, WaitLog, fetch_oauth_token, sign_rs256,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use app_scope::PAGE_TOP;
pub use batch::{BATCH_CONCURRENCY, MAX_BATCH};
pub use config::{EntraConfig, EntraCredential, EntraScope, GLOBAL_TOKEN_SCOPE, SECRET_FIELDS};

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

/// `id in (…)` takes at most 15 values by default (Graph "known issues":
/// "the request is limited to 15 expressions in the filter clause").
pub const IDS_PER_FILTER: usize = 15;
/// Tokens are fetched again this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

enum Credential {
    Secret(Secret),
    Certificate { key: Secret, x5t: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct DeltaCursor {
    users: String,
    groups: String,
}

/// The two delta rounds of a tenant pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Users,
    Groups,
}

/// A pull connector for one Entra tenant.
pub struct EntraConnector {
    config: EntraConfig,
    graph: BaseUrl,
    /// `{graph_url}/v1.0`, which Graph's paging links start with.
    version_root: String,
    token_url: Url,
    token_scope: String,
    api: ApiClient,
    /// Requests (batches, delta pages) in flight at once.
    concurrency: usize,
    credential: Credential,
    tokens: Arc<TokenCache>,
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
    Verdict::Fail(graph_error(status, response.url.path(), &body))
}

/// The error a Graph failure `status` with `body` means, for the request at `path`.
fn graph_error(status: u16, path: &str, body: &Value) -> ConnectorError {
    let code = body["error"]["code"].as_str().unwrap_or("");
    let message = body["error"]["message"].as_str().unwrap_or("");
    // A batch request's url carries its query: name the path only.
    let path = path.split('?').next().unwrap_or(path);
    let detail = format!("{status} {path}: {code}: {message}");
    match status {
        401 => ConnectorError::Unauthorized(detail),
        403 => ConnectorError::Forbidden(format!("{detail} (needs {})", ENTRA_PERMISSIONS.join(", "))),
        404 => ConnectorError::NotFound(detail),
        410 => ConnectorError::ResyncRequired(detail),
        _ if code == "syncStateNotFound" || code == "resyncRequired" => ConnectorError::ResyncRequired(detail),
        _ => ConnectorError::Http { status, detail },
    }
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
        let graph = BaseUrl::parse("graph_url", &config.graph_url)?;
        let authority = BaseUrl::parse("authority", &config.authority)?;
        let token_url = authority.join_segments([config.tenant_id.as_str(), "oauth2", "v2.0", "token"]);
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
        let concurrency = config.http.concurrency_for("microsoft graph", BATCH_CONCURRENCY, BATCH_CONCURRENCY)?;
        let api = ApiClient::new(&config.http, clock)?.named("Microsoft Graph").with_concurrency(concurrency);
        let version_root = format!("{graph}/v1.0");
        Ok(Self {
            token_scope: config.token_scope(),
            config,
            graph,
            version_root,
            token_url,
            api,
            concurrency,
            credential,
            tokens: Arc::new(TokenCache::new(TOKEN_MARGIN)),
        })
    }

    /// Takes the access token from `pool`, shared with every connector of the
    /// same credential, so a token outlives this connector (and this pull).
    pub fn with_token_pool(mut self, pool: &TokenPool) -> Self {
        self.tokens = pool.cache(&self.credential_key(), TOKEN_MARGIN, self.api.clock().now());
        self
    }

    /// The credential's identity: token endpoint, client, scope and the
    /// secret (or key and thumbprint) itself, hashed.
    fn credential_key(&self) -> CredentialKey {
        let (kind, secret, x5t) = match &self.credential {
            Credential::Secret(secret) => ("client_secret", secret.expose(), ""),
            Credential::Certificate { key, x5t } => ("certificate", key.expose(), x5t.as_str()),
        };
        CredentialKey::new(&[
            "entra",
            self.token_url.as_str(),
            &self.config.client_id,
            &self.token_scope,
            kind,
            secret,
            x5t,
        ])
    }

    async fn access_token(&self) -> Result<Secret, ConnectorError> {
        self.token(false).await
    }

    /// The cached token, or (`fresh`, for `check()`) one fetched now.
    async fn token(&self, fresh: bool) -> Result<Secret, ConnectorError> {
        let now = self.api.clock().now();
        let fetch = || async {
            let mut form = vec![
                ("client_id".to_owned(), self.config.client_id.clone()),
                ("scope".to_owned(), self.token_scope.clone()),
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
            fetch_oauth_token(&self.api, self.token_url.clone(), form).await.map_err(|e| self.scope_refused(e))
        };
        if fresh { self.tokens.get_fresh(fetch).await } else { self.tokens.get(now, fetch).await }
    }

    /// A token request refused for its scope (AADSTS1002012: not a
    /// `{resource}/.default`; AADSTS500011: no such resource in the tenant)
    /// is a configuration mistake: say which setting to fix.
    fn scope_refused(&self, error: ConnectorError) -> ConnectorError {
        let detail = match &error {
            ConnectorError::Forbidden(d) | ConnectorError::Unauthorized(d) | ConnectorError::Http { detail: d, .. } => {
                d
            }
            _ => return error,
        };
        if detail.contains("AADSTS1002012") || detail.contains("AADSTS500011") || detail.contains("invalid_scope") {
            return ConnectorError::Config(format!(
                "the token scope {:?} was refused ({detail}); set token_scope to the Graph resource of your cloud, \
                 e.g. {GLOBAL_TOKEN_SCOPE} (graph_url {} is not one)",
                self.token_scope, self.graph
            ));
        }
        error
    }

    /// `path` (`/v1.0/...`) under `graph_url`, whose path is kept.
    fn url(&self, path: &str) -> Url {
        self.graph.join(path)
    }

    fn same_origin(&self, link: &str) -> Result<Url, ConnectorError> {
        let url = Url::parse(link).map_err(|e| ConnectorError::Protocol(format!("link {e}")))?;
        if self.graph.same_origin(&url) {
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

    /// One page of a delta round.
    fn delta_page(&self, round: Round, url: Url) -> BoxFuture<'_, Result<(Round, Value), ConnectorError>> {
        Box::pin(async move { Ok((round, self.get(url).await?)) })
    }

    /// Reads the users and the groups delta rounds from their starts to
    /// their deltaLinks, side by side when the concurrency allows (they are
    /// two endpoint families; each round is a chain of pages), a sink page
    /// per Graph page as it arrives. Answers the (users, groups) deltaLinks.
    async fn delta_rounds(
        &self,
        users: Url,
        groups: Url,
        out: &mut PageWriter<'_>,
    ) -> Result<(String, String), ConnectorError> {
        let mut reads = ReadQueue::new(self.concurrency);
        reads.push(self.delta_page(Round::Users, users));
        reads.push(self.delta_page(Round::Groups, groups));
        let (mut users_link, mut groups_link) = (None, None);
        while let Some(read) = reads.next().await {
            let (round, body) = read?;
            let items = body.get("value").and_then(Value::as_array).cloned().unwrap_or_default();
            let page = match round {
                Round::Users => self.users_page(items).await?,
                Round::Groups => self.groups_page(items),
            };
            out.write(page).await?;
            if let Some(next) = odata_next_link(&body) {
                reads.push(self.delta_page(round, self.same_origin(next)?));
            } else if let Some(delta) = odata_delta_link(&body) {
                self.same_origin(delta)?;
                match round {
                    Round::Users => users_link = Some(delta.to_owned()),
                    Round::Groups => groups_link = Some(delta.to_owned()),
                }
            } else {
                return Err(ConnectorError::Protocol("delta page with neither nextLink nor deltaLink".into()));
            }
        }
        match (users_link, groups_link) {
            (Some(users), Some(groups)) => Ok((users, groups)),
            _ => Err(ConnectorError::Protocol("a delta round ended without a deltaLink".into())),
        }
    }

    async fn users_page(&self, items: Vec<Value>) -> Result<Page, ConnectorError> {
        let mut page = Page::default();
        let mut partial = Vec::new();
        for item in items {
            let Some(id) = text(&item, "id") else { continue };
            if let Some(reason) = removed_reason(&item) {
                page.removed_users.push(Removal::new(id, reason));
                continue;
            }
            match graph_user(item) {
                Some(user) => page.users.push(user),
                // A change may carry only what changed: the whole user is read below.
                None => partial.push(id),
            }
        }
        if !partial.is_empty() {
            let users = self.read_profiles(&partial).await?;
            let found: BTreeSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
            for id in partial.iter().filter(|id| !found.contains(id.as_str())) {
                page.removed_users.push(Removal::new(id.clone(), RemovalReason::Deleted));
            }
            page.users.extend(users);
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

    fn first_round(&self, path: &str, select: &str) -> Url {
        let mut url = self.url(path);
        url.query_pairs_mut().append_pair("$select", select);
        url
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
        // A fresh token: the credential is what is tested, not a cached token.
        self.token(true).await?;
        let mut users = self.url("/v1.0/users");
        users.query_pairs_mut().append_pair("$top", "1").append_pair("$select", "id");
        self.get(users).await?;
        let mut groups = self.url("/v1.0/groups");
        groups.query_pairs_mut().append_pair("$top", "1").append_pair("$select", "id");
        self.get(groups).await?;
        if let EntraScope::App { service_principal_id: sp } = &self.config.scope {
            let principal = self.first_round(&format!("/v1.0/servicePrincipals/{sp}"), "id,appId,displayName");
            let body = self.get(principal).await.map_err(|e| app_scope_error(e, sp))?;
            let mut assigned = self.url(&format!("/v1.0/servicePrincipals/{sp}/appRoleAssignedTo"));
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
                self.first_round("/v1.0/users/delta", USER_SELECT),
                self.first_round("/v1.0/groups/delta", GROUP_SELECT),
            ),
            PullMode::Resume { cursor } => {
                let state: DeltaCursor = cursor.decode()?;
                (self.same_origin(&state.users)?, self.same_origin(&state.groups)?)
            }
        };
        let (users, groups) = self.delta_rounds(users_start, groups_start, out).await?;
        Ok(Some(Cursor::encode(&DeltaCursor { users, groups })?))
    }

    fn wait_log(&self) -> Option<Arc<WaitLog>> {
        Some(self.api.wait_log())
    }
}

/// Entra as directory-sync registers it (one line of its connector registry):
/// the kind `entra`, its secret fields, and a connector whose tokens come
/// from the service's token pool. The conformance kit builds it the same way.
#[derive(Debug)]
pub struct Entra;

impl muster_connector::ConnectorSpec for Entra {
    const KIND: &'static str = "entra";
    const TITLE: &'static str = "Microsoft Entra ID (Graph; changes by delta queries)";
    const SECRET_FIELDS: &'static [&'static str] = SECRET_FIELDS;
    type Config = EntraConfig;

    fn connect(
        config: EntraConfig,
        clock: Arc<dyn Clock>,
        tokens: &TokenPool,
    ) -> Result<Box<dyn PullConnector>, ConnectorError> {
        Ok(Box::new(EntraConnector::new(config, clock)?.with_token_pool(tokens)))
    }
}
