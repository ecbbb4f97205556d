//! The Okta pull connector: reads the users and groups of an Okta org (or
//! only those assigned to one app) through the Okta Management API, and
//! follows changes through the System Log (`/api/v1/logs`, polled in
//! ascending order from the `next` link, de-duplicated by event `uuid`).
//! Authenticates with an API token (`SSWS`) or as an OAuth 2.0 service app
//! (client credentials with a `private_key_jwt` assertion), and respects
//! Okta's `X-Rate-Limit-*` headers before running into a 429 (per endpoint
//! family, as Okta counts them). Group member pages are read a few groups at
//! a time ([`DEFAULT_CONCURRENCY`], at most [`MAX_CONCURRENCY`]), so one
//! slow or throttled request does not hold up the rest of the pull. It
//! implements [`PullConnector`] of `muster-connector`; Okta's wire types stay private.

/// The fake server of this crate's tests (`tests/fake`), compiled in for other
/// crates' end-to-end tests with the `fake` feature. The file stays where the
/// connector's own tests include it, so both build the same fake.
#[cfg(feature = "fake")]
#[path = "../tests/fake/mod.rs"]
pub mod testing;

mod config;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use muster_connector::auth::random_jti;
use muster_connector::http::{ApiResponse, Url, Verdict};
use muster_connector::{
    ApiClient, ApiRequest, Assignment, BaseUrl, Capabilities, CheckReport, Clock, ConnectorError, CredentialKey,
    Cursor, Group, Membership, MembershipChange, Page, PageWriter, PullConnector, PullMode, RateLimitHeaders,
    ReadQueue, Removal, RemovalReason, Secret, TokenCache, TokenPool, User, WaitLog, fetch_oauth_token, sign_rs256,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::debug;

pub use config::{OKTA_SCOPES, OktaAuth, OktaConfig, SECRET_FIELDS};
use wire::{AppGroup, AppUser, LogEvent, OktaError};

/// System Log event types that change a user: the user is re-read.
const USER_EVENTS: [&str; 8] = [
    "user.lifecycle.create",
    "user.lifecycle.activate",
    "user.lifecycle.reactivate",
    "user.lifecycle.deactivate",
    "user.lifecycle.suspend",
    "user.lifecycle.unsuspend",
    "user.lifecycle.delete.initiated",
    "user.account.update_profile",
];
const MEMBER_ADD: &str = "group.user_membership.add";
const MEMBER_REMOVE: &str = "group.user_membership.remove";
const GROUP_EVENTS: [&str; 2] = ["group.lifecycle.create", "group.profile.update"];
const GROUP_DELETE: &str = "group.lifecycle.delete";
const APP_USER_EVENTS: [&str; 2] = ["application.user_membership.add", "application.user_membership.remove"];
const APP_GROUP_EVENTS: [&str; 2] = ["group.application_assignment.add", "group.application_assignment.remove"];

/// How far before a full listing's start its System Log position begins,
/// so events published while the listing ran are read again (they are idempotent).
const LOG_OVERLAP: Duration = Duration::from_secs(60);
/// Event uuids remembered in the cursor to drop replays.
const SEEN_EVENTS: usize = 1000;
/// Service-app tokens are fetched again this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// Requests in flight at once unless `http.concurrency` says otherwise:
/// Okta's docs note that even large bulk loads rarely need more than 10.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Okta's concurrent rate limit for API traffic on its smallest plan
/// (Integrator Free: 35 simultaneous transactions per org; 75 on the
/// others, developer.okta.com/docs/reference/rl2-concurrency): never more.
pub const MAX_CONCURRENCY: usize = 35;

/// Where the change feed continues: the poll's `next` link (path and query,
/// followed verbatim), recent event uuids and when it was written.
#[derive(Debug, Serialize, Deserialize)]
struct LogCursor {
    next: String,
    seen: VecDeque<String>,
    at: chrono::DateTime<chrono::Utc>,
}

/// A group's id, one page of its members, and the link to its next page.
type MemberPage = Result<(String, Page, Option<Url>), ConnectorError>;

enum Credentials {
    ApiToken(Secret),
    ServiceApp { client_id: String, key: Secret, key_id: Option<String>, scopes: Vec<String> },
}

/// A pull connector for one Okta org.
pub struct OktaConnector {
    config: OktaConfig,
    org: BaseUrl,
    api: ApiClient,
    /// Group member listings read at once.
    concurrency: usize,
    credentials: Credentials,
    tokens: Arc<TokenCache>,
}

impl std::fmt::Debug for OktaConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OktaConnector").field("org", &self.org.as_str()).field("app", &self.config.app_id).finish()
    }
}

/// Okta's error body (`errorCode`, `errorSummary`) folded into the message.
fn okta_verdict(response: &ApiResponse) -> Verdict {
    let status = response.status.as_u16();
    if response.status.is_success() {
        return Verdict::Accept;
    }
    if matches!(status, 429 | 500 | 502 | 503 | 504) {
        return Verdict::Retry;
    }
    let detail = match serde_json::from_slice::<OktaError>(&response.body) {
        Ok(e) => format!("{} {}: {} {}", status, response.url.path(), e.error_code, e.error_summary),
        Err(_) => format!("{} {}: {}", status, response.url.path(), response.detail()),
    };
    Verdict::Fail(match status {
        401 => ConnectorError::Unauthorized(detail),
        403 => ConnectorError::Forbidden(detail),
        404 => ConnectorError::NotFound(detail),
        _ => ConnectorError::Http { status, detail },
    })
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn okta_user(raw: Value, assignment: Assignment) -> Result<User, ConnectorError> {
    let id = text(&raw, "id").ok_or_else(|| ConnectorError::Protocol("okta user without id".into()))?;
    let profile = raw.get("profile").cloned().unwrap_or(Value::Null);
    let user_name =
        text(&profile, "login").ok_or_else(|| ConnectorError::Protocol(format!("okta user {id} without login")))?;
    let status = text(&raw, "status").unwrap_or_default();
    Ok(User {
        id,
        user_name,
        email: text(&profile, "email"),
        given_name: text(&profile, "firstName"),
        family_name: text(&profile, "lastName"),
        display_name: text(&profile, "displayName"),
        active: !matches!(status.as_str(), "DEPROVISIONED" | "SUSPENDED"),
        assignment,
        raw,
    })
}

fn okta_group(raw: Value) -> Result<Group, ConnectorError> {
    let id = text(&raw, "id").ok_or_else(|| ConnectorError::Protocol("okta group without id".into()))?;
    let profile = raw.get("profile").cloned().unwrap_or(Value::Null);
    let name = text(&profile, "name").unwrap_or_else(|| id.clone());
    Ok(Group { id, name, description: text(&profile, "description"), raw })
}

fn embedded_user(app_user: AppUser) -> Result<User, ConnectorError> {
    let assignment = if app_user.scope == "GROUP" { Assignment::Group } else { Assignment::Direct };
    let raw = app_user
        .embedded
        .and_then(|e| e.user)
        .ok_or_else(|| ConnectorError::Protocol(format!("app user {} without _embedded.user", app_user.id)))?;
    okta_user(raw, assignment)
}

fn embedded_group(app_group: AppGroup) -> Result<Group, ConnectorError> {
    let raw = app_group
        .embedded
        .and_then(|e| e.group)
        .ok_or_else(|| ConnectorError::Protocol(format!("app group {} without _embedded.group", app_group.id)))?;
    okta_group(raw)
}

impl OktaConnector {
    /// Builds the connector; secrets are read now, so a missing file or
    /// variable is reported before any request.
    pub fn new(config: OktaConfig, clock: Arc<dyn Clock>) -> Result<Self, ConnectorError> {
        let org = BaseUrl::parse("org_url", &config.org_url)?;
        if config.page_size == 0 {
            return Err(ConnectorError::Config("page_size must be at least 1".into()));
        }
        let credentials = match &config.auth {
            OktaAuth::ApiToken { token } => Credentials::ApiToken(token.resolve()?),
            OktaAuth::PrivateKeyJwt { client_id, private_key, key_id, scopes } => Credentials::ServiceApp {
                client_id: client_id.clone(),
                key: private_key.resolve()?,
                key_id: key_id.clone(),
                scopes: scopes.clone().unwrap_or_else(|| OKTA_SCOPES.iter().map(|s| (*s).to_owned()).collect()),
            },
        };
        let concurrency = config.http.concurrency_for("okta", DEFAULT_CONCURRENCY, MAX_CONCURRENCY)?;
        let api = ApiClient::new(&config.http, clock)?
            .named("Okta")
            .with_rate_limit_headers(RateLimitHeaders::OKTA)
            .with_concurrency(concurrency);
        Ok(Self { config, org, api, concurrency, credentials, tokens: Arc::new(TokenCache::new(TOKEN_MARGIN)) })
    }

    /// Takes the service app's access token from `pool`, shared with every
    /// connector of the same credential, so a token outlives this connector
    /// (and this pull). An API token needs no pool.
    pub fn with_token_pool(mut self, pool: &TokenPool) -> Self {
        if let Credentials::ServiceApp { client_id, key, key_id, scopes } = &self.credentials {
            let token_url = self.org.join("/oauth2/v1/token");
            let key = CredentialKey::new(&[
                "okta",
                token_url.as_str(),
                client_id,
                &scopes.join(" "),
                key_id.as_deref().unwrap_or(""),
                key.expose(),
            ]);
            self.tokens = pool.cache(&key, TOKEN_MARGIN, self.api.clock().now());
        }
        self
    }

    /// `path` (`/api/v1/...`) under `org_url`, whose path is kept.
    fn url(&self, path: &str) -> Result<Url, ConnectorError> {
        Ok(self.org.join(path))
    }

    /// A link Okta returned, accepted only on the org's own origin (the
    /// token must never go elsewhere).
    fn same_origin(&self, link: Url) -> Result<Url, ConnectorError> {
        if self.org.same_origin(&link) {
            Ok(link)
        } else {
            Err(ConnectorError::Protocol(format!(
                "okta returned a link to another origin: {}",
                link.origin().ascii_serialization()
            )))
        }
    }

    async fn access_token(&self) -> Result<Secret, ConnectorError> {
        self.token(false).await
    }

    /// The cached token, or (`fresh`, for `check()`) one fetched now.
    async fn token(&self, fresh: bool) -> Result<Secret, ConnectorError> {
        let Credentials::ServiceApp { client_id, key, key_id, scopes } = &self.credentials else {
            return Err(ConnectorError::Config("no service app configured".into()));
        };
        let token_url = self.url("/oauth2/v1/token")?;
        let now = self.api.clock().now();
        let fetch = || async {
            // private_key_jwt: iss = sub = client id, aud = the token endpoint.
            let claims = serde_json::json!({
                "iss": client_id,
                "sub": client_id,
                "aud": token_url.as_str(),
                "iat": now.timestamp(),
                "exp": now.timestamp() + 300,
                "jti": random_jti(),
            });
            let assertion = sign_rs256(&claims, key, key_id.clone(), None)?;
            let form = vec![
                ("grant_type".to_owned(), "client_credentials".to_owned()),
                ("scope".to_owned(), scopes.join(" ")),
                (
                    "client_assertion_type".to_owned(),
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ),
                ("client_assertion".to_owned(), assertion.expose().to_owned()),
            ];
            fetch_oauth_token(&self.api, token_url.clone(), form).await
        };
        if fresh { self.tokens.get_fresh(fetch).await } else { self.tokens.get(now, fetch).await }
    }

    async fn get(&self, url: Url) -> Result<ApiResponse, ConnectorError> {
        let request = ApiRequest::get(url).header("accept", "application/json");
        match &self.credentials {
            Credentials::ApiToken(token) => {
                self.api.send_with(&request.authorization("SSWS", token), &okta_verdict).await
            }
            Credentials::ServiceApp { .. } => {
                let token = self.access_token().await?;
                let first = self.api.send_with(&request.clone().authorization("Bearer", &token), &okta_verdict).await;
                if let Err(ConnectorError::Unauthorized(_)) = first {
                    // The token may have been revoked early: one fresh try.
                    self.tokens.invalidate().await;
                    let token = self.access_token().await?;
                    return self.api.send_with(&request.authorization("Bearer", &token), &okta_verdict).await;
                }
                first
            }
        }
    }

    /// GETs `first` and every `rel="next"` page after it, handing each
    /// page's items to `each`, which returns the sink page to write.
    async fn list<F>(&self, first: Url, out: &mut PageWriter<'_>, mut each: F) -> Result<Vec<String>, ConnectorError>
    where
        F: FnMut(Vec<Value>) -> Result<(Page, Vec<String>), ConnectorError> + Send,
    {
        let mut next = Some(first);
        let mut keys = Vec::new();
        while let Some(url) = next.take() {
            let response = self.get(url).await?;
            next = response.next_link().map(|l| self.same_origin(l)).transpose()?;
            let items: Vec<Value> = response.json()?;
            let (page, mut page_keys) = each(items)?;
            keys.append(&mut page_keys);
            out.write(page).await?;
        }
        Ok(keys)
    }

    fn limited(&self, path: &str, extra: &[(&str, &str)]) -> Result<Url, ConnectorError> {
        let mut url = self.url(path)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &self.config.page_size.to_string());
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// One page of a group's members, and the link to the next.
    fn member_page(&self, group_id: String, url: Url) -> BoxFuture<'_, MemberPage> {
        Box::pin(async move {
            let response = self.get(url).await?;
            let next = response.next_link().map(|l| self.same_origin(l)).transpose()?;
            let mut page = Page::default();
            for item in response.json::<Vec<Value>>()? {
                if let Some(uid) = text(&item, "id") {
                    page.memberships.push(MembershipChange::Added(Membership::new(group_id.clone(), uid)));
                }
            }
            Ok((group_id, page, next))
        })
    }

    /// The members of `groups`, [`Self::concurrency`] requests at once: Okta
    /// limits the groups endpoints as one family per minute, not request by
    /// request, so while one page waits out a retry the others go on. A
    /// group's next page is asked for when its previous one arrived (Link
    /// `next`); pages are written one at a time as they arrive, so no more
    /// than `concurrency` pages are held.
    async fn list_members_of(&self, groups: Vec<String>, out: &mut PageWriter<'_>) -> Result<(), ConnectorError> {
        let mut reads = ReadQueue::new(self.concurrency);
        for id in groups {
            let url = self.limited(&format!("/api/v1/groups/{id}/users"), &[])?;
            reads.push(self.member_page(id, url));
        }
        while let Some(read) = reads.next().await {
            let (id, page, next) = read?;
            if let Some(next) = next {
                reads.push(self.member_page(id, next));
            }
            out.write(page).await?;
        }
        Ok(())
    }

    /// Lists groups page by page, then the members of each group of that page.
    async fn list_groups(&self, first: Url, app_scoped: bool, out: &mut PageWriter<'_>) -> Result<(), ConnectorError> {
        let mut next = Some(first);
        while let Some(url) = next.take() {
            let response = self.get(url).await?;
            next = response.next_link().map(|l| self.same_origin(l)).transpose()?;
            let groups: Vec<Group> = if app_scoped {
                response.json::<Vec<AppGroup>>()?.into_iter().map(embedded_group).collect::<Result<_, _>>()?
            } else {
                response.json::<Vec<Value>>()?.into_iter().map(okta_group).collect::<Result<_, _>>()?
            };
            let ids: Vec<String> = groups.iter().map(|g| g.id.clone()).collect();
            out.write(Page { groups, ..Page::default() }).await?;
            self.list_members_of(ids, out).await?;
        }
        Ok(())
    }

    fn log_url(&self, since: chrono::DateTime<chrono::Utc>) -> Result<Url, ConnectorError> {
        let mut types: Vec<&str> = USER_EVENTS.to_vec();
        types.extend([MEMBER_ADD, MEMBER_REMOVE, GROUP_DELETE]);
        types.extend(GROUP_EVENTS);
        if self.config.app_id.is_some() {
            types.extend(APP_USER_EVENTS);
            types.extend(APP_GROUP_EVENTS);
        }
        let filter = types.iter().map(|t| format!("eventType eq \"{t}\"")).collect::<Vec<_>>().join(" or ");
        let since = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.limited("/api/v1/logs", &[("since", &since), ("sortOrder", "ASCENDING"), ("filter", &filter)])
    }

    fn relative(url: &Url) -> String {
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn refresh(&self, out: &mut PageWriter<'_>) -> Result<Option<Cursor>, ConnectorError> {
        let started = self.api.clock().now();
        match &self.config.app_id {
            Some(app) => {
                let url = self.limited(&format!("/api/v1/apps/{app}/users"), &[("expand", "user")])?;
                self.list(url, out, |items| {
                    let mut page = Page::default();
                    for item in items {
                        let app_user: AppUser = serde_json::from_value(item)
                            .map_err(|e| ConnectorError::Protocol(format!("app user: {e}")))?;
                        page.users.push(embedded_user(app_user)?);
                    }
                    Ok((page, Vec::new()))
                })
                .await?;
                let url = self.limited(&format!("/api/v1/apps/{app}/groups"), &[("expand", "group")])?;
                self.list_groups(url, true, out).await?;
            }
            None => {
                let users = |items: Vec<Value>| {
                    let users = items.into_iter().map(|u| okta_user(u, Assignment::Scope)).collect::<Result<_, _>>()?;
                    Ok((Page { users, ..Page::default() }, Vec::new()))
                };
                self.list(self.limited("/api/v1/users", &[])?, out, users).await?;
                // `/api/v1/users` leaves DEPROVISIONED users out unless asked by filter.
                let deprovisioned = self.limited("/api/v1/users", &[("filter", "status eq \"DEPROVISIONED\"")])?;
                self.list(deprovisioned, out, users).await?;
                self.list_groups(self.limited("/api/v1/groups", &[])?, false, out).await?;
            }
        }
        let since = started - chrono::Duration::from_std(LOG_OVERLAP).unwrap_or_default();
        let cursor = LogCursor { next: Self::relative(&self.log_url(since)?), seen: VecDeque::new(), at: started };
        Ok(Some(Cursor::encode(&cursor)?))
    }

    async fn fetch_user(&self, id: &str) -> Result<Option<User>, ConnectorError> {
        let result = match &self.config.app_id {
            Some(app) => {
                let mut url = self.url(&format!("/api/v1/apps/{app}/users/{id}"))?;
                url.query_pairs_mut().append_pair("expand", "user");
                match self.get(url).await {
                    Ok(r) => embedded_user(r.json()?).map(Some),
                    Err(e) => Err(e),
                }
            }
            None => match self.get(self.url(&format!("/api/v1/users/{id}"))?).await {
                Ok(r) => okta_user(r.json()?, Assignment::Scope).map(Some),
                Err(e) => Err(e),
            },
        };
        match result {
            Err(ConnectorError::NotFound(_)) => Ok(None),
            other => other,
        }
    }

    async fn fetch_group(&self, id: &str) -> Result<Option<Group>, ConnectorError> {
        let result = match &self.config.app_id {
            Some(app) => {
                let mut url = self.url(&format!("/api/v1/apps/{app}/groups/{id}"))?;
                url.query_pairs_mut().append_pair("expand", "group");
                match self.get(url).await {
                    Ok(r) => embedded_group(r.json()?).map(Some),
                    Err(e) => Err(e),
                }
            }
            None => match self.get(self.url(&format!("/api/v1/groups/{id}"))?).await {
                Ok(r) => okta_group(r.json()?).map(Some),
                Err(e) => Err(e),
            },
        };
        match result {
            Err(ConnectorError::NotFound(_)) => Ok(None),
            other => other,
        }
    }

    /// After a group was assigned to the app (or unassigned): the group and
    /// its members, re-read page by page from the org's group membership.
    async fn reread_members(
        &self,
        group_id: &str,
        assigned: bool,
        out: &mut PageWriter<'_>,
    ) -> Result<(), ConnectorError> {
        let group = if assigned { self.fetch_group(group_id).await? } else { None };
        let in_scope = group.is_some();
        let mut head = Page::default();
        match group {
            Some(group) => head.groups.push(group),
            None => head.removed_groups.push(Removal::new(group_id, RemovalReason::Unassigned)),
        }
        out.write(head).await?;
        let mut next = Some(self.limited(&format!("/api/v1/groups/{group_id}/users"), &[])?);
        while let Some(url) = next.take() {
            let response = match self.get(url).await {
                Err(ConnectorError::NotFound(_)) => return Ok(()),
                other => other?,
            };
            next = response.next_link().map(|l| self.same_origin(l)).transpose()?;
            let mut page = Page::default();
            for item in response.json::<Vec<Value>>()? {
                let Some(uid) = text(&item, "id") else { continue };
                if in_scope {
                    page.memberships.push(MembershipChange::Added(Membership::new(group_id, uid.clone())));
                }
                match self.fetch_user(&uid).await? {
                    Some(user) => page.users.push(user),
                    None => page.removed_users.push(Removal::new(uid, RemovalReason::Unassigned)),
                }
            }
            out.write(page).await?;
        }
        Ok(())
    }

    /// Turns one page of events into one sink page: re-reads the users and
    /// groups they name (so a replayed event changes nothing), nets out
    /// membership adds and removes in order.
    async fn events_page(
        &self,
        events: Vec<LogEvent>,
        seen: &mut VecDeque<String>,
        group_in_scope: &mut HashMap<String, bool>,
        out: &mut PageWriter<'_>,
    ) -> Result<Page, ConnectorError> {
        let app = self.config.app_id.as_deref();
        let mut users = BTreeSet::new();
        let mut groups = BTreeSet::new();
        let mut deleted_groups = BTreeSet::new();
        let mut memberships: BTreeMap<Membership, bool> = BTreeMap::new();
        let mut assignments: BTreeMap<String, bool> = BTreeMap::new();
        for event in events {
            if seen.contains(&event.uuid) {
                continue;
            }
            seen.push_back(event.uuid.clone());
            while seen.len() > SEEN_EVENTS {
                seen.pop_front();
            }
            let targets = event.target.unwrap_or_default();
            let target = |kind: &str| targets.iter().find(|t| t.kind == kind).map(|t| t.id.clone());
            let kind = event.event_type.as_str();
            if USER_EVENTS.contains(&kind) {
                users.extend(target("User"));
            } else if kind == MEMBER_ADD || kind == MEMBER_REMOVE {
                if let (Some(user), Some(group)) = (target("User"), target("UserGroup")) {
                    memberships.insert(Membership::new(group, user.clone()), kind == MEMBER_ADD);
                    if app.is_some() {
                        // Group membership can bring a user into (or out of) the app.
                        users.insert(user);
                    }
                }
            } else if GROUP_EVENTS.contains(&kind) {
                if let Some(group) = target("UserGroup") {
                    deleted_groups.remove(&group);
                    groups.insert(group);
                }
            } else if kind == GROUP_DELETE {
                if let Some(group) = target("UserGroup") {
                    groups.remove(&group);
                    deleted_groups.insert(group);
                }
            } else if APP_USER_EVENTS.contains(&kind) {
                if target("AppInstance").as_deref() == app {
                    users.extend(target("User"));
                }
            } else if APP_GROUP_EVENTS.contains(&kind)
                && target("AppInstance").as_deref() == app
                && let Some(group) = target("UserGroup")
            {
                assignments.insert(group, kind == APP_GROUP_EVENTS[0]);
            }
        }
        let reason = if app.is_some() { RemovalReason::Unassigned } else { RemovalReason::Deleted };
        // A group (un)assigned to the app brings its members in or out: re-read them.
        for (group, assigned) in assignments {
            group_in_scope.remove(&group);
            self.reread_members(&group, assigned, out).await?;
        }
        let mut page = Page::default();
        for id in users {
            match self.fetch_user(&id).await? {
                Some(user) => page.users.push(user),
                None => page.removed_users.push(Removal::new(id, reason)),
            }
        }
        for id in groups {
            match self.fetch_group(&id).await? {
                Some(group) => page.groups.push(group),
                None => page.removed_groups.push(Removal::new(id, reason)),
            }
        }
        page.removed_groups.extend(deleted_groups.into_iter().map(|id| Removal::new(id, RemovalReason::Deleted)));
        for (membership, added) in memberships {
            if app.is_some() {
                let known = group_in_scope.get(&membership.group_id).copied();
                let in_scope = match known {
                    Some(v) => v,
                    None => {
                        let v = self.fetch_group(&membership.group_id).await?.is_some();
                        group_in_scope.insert(membership.group_id.clone(), v);
                        v
                    }
                };
                if !in_scope {
                    continue;
                }
            }
            page.memberships.push(if added {
                MembershipChange::Added(membership)
            } else {
                MembershipChange::Removed(membership)
            });
        }
        Ok(page)
    }

    async fn resume(&self, cursor: &Cursor, out: &mut PageWriter<'_>) -> Result<Option<Cursor>, ConnectorError> {
        let mut state: LogCursor = cursor.decode()?;
        let now = self.api.clock().now();
        let retention = chrono::Duration::days(i64::from(self.config.log_retention_days));
        if now - state.at > retention {
            return Err(ConnectorError::ResyncRequired("the system log position is older than its retention".into()));
        }
        // The stored link is a path from the org's origin (the org_url's path included).
        let mut url = self.org.on_origin(&state.next)?;
        let mut group_in_scope = HashMap::new();
        loop {
            let response = match self.get(url).await {
                // Okta refuses a position it no longer holds with 400 E0000001.
                Err(ConnectorError::Http { status: 400, detail }) => {
                    return Err(ConnectorError::ResyncRequired(detail));
                }
                other => other?,
            };
            // In polling mode the `next` link is always present; follow it verbatim.
            let next = response
                .next_link()
                .ok_or_else(|| ConnectorError::Protocol("system log answered without a next link".into()))?;
            let next = self.same_origin(next)?;
            let events: Vec<LogEvent> = response.json()?;
            let count = events.len();
            debug!(events = count, "system log page");
            let mut page = self.events_page(events, &mut state.seen, &mut group_in_scope, out).await?;
            state.next = Self::relative(&next);
            state.at = self.api.clock().now();
            let checkpoint = Cursor::encode(&state)?;
            page.checkpoint = Some(checkpoint.clone());
            out.write(page).await?;
            if count == 0 {
                return Ok(Some(checkpoint));
            }
            url = next;
        }
    }
}

#[async_trait]
impl PullConnector for OktaConnector {
    fn kind(&self) -> &'static str {
        "okta"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { incremental: true }
    }

    async fn check(&self) -> Result<CheckReport, ConnectorError> {
        if let Credentials::ServiceApp { .. } = &self.credentials {
            // A fresh token: the key is what is tested, not a cached token.
            self.token(true).await?;
        }
        let scope = match &self.config.app_id {
            Some(app) => {
                let found = self.get(self.url(&format!("/api/v1/apps/{app}"))?).await.map_err(|e| match e {
                    ConnectorError::NotFound(_) => {
                        ConnectorError::NotFound(format!("okta app {app} does not exist in {}", self.org))
                    }
                    other => other,
                })?;
                let label = text(&found.json::<Value>()?, "label").unwrap_or_default();
                self.get(self.limited(&format!("/api/v1/apps/{app}/users"), &[])?).await?;
                format!("app {label:?} ({app})")
            }
            None => {
                self.get(self.limited("/api/v1/users", &[])?).await?;
                self.get(self.limited("/api/v1/groups", &[])?).await?;
                "the whole org".to_owned()
            }
        };
        let now = self.api.clock().now();
        self.get(self.log_url(now)?).await.map_err(|e| match e {
            ConnectorError::Forbidden(d) => {
                ConnectorError::Forbidden(format!("the system log is not readable (okta.logs.read): {d}"))
            }
            other => other,
        })?;
        Ok(CheckReport { summary: format!("okta {}: {scope} readable, system log readable", self.org) })
    }

    async fn pull(&self, mode: &PullMode, out: &mut PageWriter<'_>) -> Result<Option<Cursor>, ConnectorError> {
        match mode {
            PullMode::Refresh => self.refresh(out).await,
            PullMode::Resume { cursor } => self.resume(cursor, out).await,
        }
    }

    fn wait_log(&self) -> Option<Arc<WaitLog>> {
        Some(self.api.wait_log())
    }
}

/// Okta as directory-sync registers it (one line of its connector registry):
/// the kind `okta`, its secret fields, and a connector whose tokens come
/// from the service's token pool. The conformance kit builds it the same way.
#[derive(Debug)]
pub struct Okta;

impl muster_connector::ConnectorSpec for Okta {
    const KIND: &'static str = "okta";
    const TITLE: &'static str = "Okta (Management API; changes by the System Log)";
    const SECRET_FIELDS: &'static [&'static str] = SECRET_FIELDS;
    type Config = OktaConfig;

    fn connect(
        config: OktaConfig,
        clock: Arc<dyn Clock>,
        tokens: &TokenPool,
    ) -> Result<Box<dyn PullConnector>, ConnectorError> {
        Ok(Box::new(OktaConnector::new(config, clock)?.with_token_pool(tokens)))
    }
}
