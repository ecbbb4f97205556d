//! The Google Workspace pull connector: reads a customer's users, groups and
//! group members through the Admin SDK Directory API (`users.list`,
//! `groups.list`, `members.list`, paging with `pageToken` to the end), as a
//! service account with domain-wide delegation impersonating an
//! administrator (an RS256 JWT assertion exchanged at Google's token
//! endpoint). Suspended and archived users are delivered inactive; the scope
//! is the whole customer, some org units, or some groups; nested groups are
//! expanded (cycles guarded) and the `CUSTOMER` member ("everyone in the
//! domain") stands for every user in scope. Errors are classified by
//! Google's `error.errors[].reason`: rate-limit reasons are retried, other
//! 403s stop the run naming the missing delegation, scope or privilege.
//! Google sends no rate-limit headers: its throttling answers back off
//! exponentially, as its limits page asks. Groups are expanded a few at a
//! time ([`DEFAULT_CONCURRENCY`], at most [`MAX_CONCURRENCY`]). The
//! Directory API has no change feed that fits a pull connector (push
//! channels need a public HTTPS endpoint), so every pull is a full listing
//! and `Resume` asks for one. It implements [`PullConnector`] of
//! `muster-connector`; Google's wire types stay private.

/// The fake server of this crate's tests (`tests/fake`), compiled in for other
/// crates' end-to-end tests with the `fake` feature. The file stays where the
/// connector's own tests include it, so both build the same fake.
#[cfg(feature = "fake")]
#[path = "../tests/fake/mod.rs"]
pub mod testing;

mod config;
mod wire;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use muster_connector::http::{ApiResponse, Url, Verdict};
use muster_connector::{
    AccessToken, ApiClient, ApiRequest, Assignment, BaseUrl, Capabilities, CheckReport, Clock, ConnectorError,
    CredentialKey, Cursor, Group, Membership, MembershipChange, Page, PageWriter, PullConnector, PullMode, ReadQueue,
    Secret, TokenCache, TokenPool, User, WaitLog, sign_rs256,
};
use serde_json::Value;
use tracing::debug;

pub use config::{GOOGLE_SCOPES, GOOGLE_TOKEN_URL, GoogleConfig, GoogleScope, SECRET_FIELDS};
use wire::{ErrorBody, GroupsPage, MembersPage, ServiceAccountKey, UsersPage, token};

/// `maxResults` of `users.list` (the API's limit).
pub const USERS_PAGE: u32 = 500;
/// `maxResults` of `groups.list` and `members.list` (the API's limit).
pub const GROUPS_PAGE: u32 = 200;
/// Memberships per sink page when a group's expanded members are written.
const MEMBERSHIPS_PER_PAGE: usize = 500;
/// Lifetime asked for in the assertion (Google accepts at most one hour).
const ASSERTION_LIFETIME_SECS: i64 = 3600;
/// Tokens are fetched again this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// The 403/429 reasons of the Directory API that mean "slow down" (retried).
const RATE_LIMIT_REASONS: [&str; 3] = ["userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded"];
/// Groups expanded at once unless `http.concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// The most requests in flight. Google documents no number for the
/// Directory API's concurrent-request limit (403 `quotaExceeded`, 429
/// `rateLimitExceeded`), only 2,400 queries per minute per user: 10 in flight
/// at ~250 ms each is that rate, and the Admin SDK guides suggest starting
/// parallel work at 10 threads.
pub const MAX_CONCURRENCY: usize = 10;

/// A pull connector for one Google Workspace customer.
pub struct GoogleConnector {
    config: GoogleConfig,
    api_base: BaseUrl,
    token_url: Url,
    client_email: String,
    client_id: Option<String>,
    key: Secret,
    key_id: Option<String>,
    api: ApiClient,
    /// Groups expanded at once.
    concurrency: usize,
    tokens: Arc<TokenCache>,
}

impl std::fmt::Debug for GoogleConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleConnector")
            .field("service_account", &self.client_email)
            .field("admin", &self.config.admin_email)
            .field("customer", &self.config.customer)
            .finish_non_exhaustive()
    }
}

/// One group's members after nested groups were expanded.
#[derive(Debug, Default)]
struct Expansion {
    users: BTreeSet<String>,
    /// A `CUSTOMER` member was met: every user in scope is a member.
    everyone: bool,
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn google_user(raw: Value, assignment: Assignment) -> Result<User, ConnectorError> {
    let id = text(&raw, "id").ok_or_else(|| ConnectorError::Protocol("google user without id".into()))?;
    let user_name = text(&raw, "primaryEmail")
        .ok_or_else(|| ConnectorError::Protocol(format!("google user {id} without primaryEmail")))?;
    let name = raw.get("name").cloned().unwrap_or(Value::Null);
    let flag = |key: &str| raw.get(key).and_then(Value::as_bool).unwrap_or(false);
    Ok(User {
        id,
        email: Some(user_name.clone()),
        user_name,
        given_name: text(&name, "givenName"),
        family_name: text(&name, "familyName"),
        display_name: text(&name, "fullName"),
        // Suspended and archived accounts stay in the directory, not assigned.
        active: !flag("suspended") && !flag("archived"),
        assignment,
        raw,
    })
}

fn google_group(raw: Value) -> Result<Group, ConnectorError> {
    let id = text(&raw, "id").ok_or_else(|| ConnectorError::Protocol("google group without id".into()))?;
    let name = text(&raw, "name").or_else(|| text(&raw, "email")).unwrap_or_else(|| id.clone());
    Ok(Group { id, name, description: text(&raw, "description").filter(|d| !d.is_empty()), raw })
}

/// `orgUnitPath='/Eng'`: the value quoted (paths may hold spaces), quotes
/// and backslashes escaped; it matches the org unit and those below it
/// (developers.google.com/workspace/admin/directory/v1/guides/search-users).
pub fn org_unit_query(path: &str) -> String {
    let escaped = path.replace('\\', "\\\\").replace('\'', "\\'");
    format!("orgUnitPath='{escaped}'")
}

impl GoogleConnector {
    /// Builds the connector; the key file is read and parsed now, so a
    /// missing or malformed key is reported before any request.
    pub fn new(config: GoogleConfig, clock: Arc<dyn Clock>) -> Result<Self, ConnectorError> {
        let reference = config.service_account_key.to_string();
        let raw = config.service_account_key.resolve()?;
        let key: ServiceAccountKey = serde_json::from_str(raw.expose()).map_err(|e| {
            ConnectorError::Config(format!("{reference} is not a google service account json key: {e}"))
        })?;
        if key.kind.as_deref().is_some_and(|k| k != "service_account") {
            return Err(ConnectorError::Config(format!(
                "{reference} is a {:?} credential, not a service account key",
                key.kind.unwrap_or_default()
            )));
        }
        if config.admin_email.trim().is_empty() || !config.admin_email.contains('@') {
            return Err(ConnectorError::Config(
                "admin_email must be the address of an administrator to impersonate".into(),
            ));
        }
        match &config.scope {
            GoogleScope::OrgUnits { paths } if paths.is_empty() || paths.iter().any(|p| !p.starts_with('/')) => {
                return Err(ConnectorError::Config("scope org_units needs paths starting with '/'".into()));
            }
            GoogleScope::Groups { groups } if groups.is_empty() => {
                return Err(ConnectorError::Config("scope groups needs at least one group".into()));
            }
            _ => {}
        }
        let api_base = BaseUrl::parse("api_url", &config.api_url)?;
        let token_text = config.token_url.clone().or(key.token_uri.clone()).unwrap_or_else(|| GOOGLE_TOKEN_URL.into());
        let token_url =
            Url::parse(&token_text).map_err(|e| ConnectorError::Config(format!("token url {token_text:?}: {e}")))?;
        let concurrency = config.http.concurrency_for("google", DEFAULT_CONCURRENCY, MAX_CONCURRENCY)?;
        let api = ApiClient::new(&config.http, clock)?.named("Google").with_concurrency(concurrency);
        Ok(Self {
            concurrency,
            api_base,
            token_url,
            client_email: key.client_email,
            client_id: key.client_id,
            key: Secret::new(key.private_key),
            key_id: key.private_key_id,
            api,
            tokens: Arc::new(TokenCache::new(TOKEN_MARGIN)),
            config,
        })
    }

    /// Takes the access token from `pool`, shared with every connector of the
    /// same service account, key, admin and token endpoint, so a token
    /// outlives this connector (and this pull).
    pub fn with_token_pool(mut self, pool: &TokenPool) -> Self {
        let key = CredentialKey::new(&[
            "google",
            self.token_url.as_str(),
            &self.client_email,
            &self.config.admin_email,
            &GOOGLE_SCOPES.join(" "),
            self.key_id.as_deref().unwrap_or(""),
            self.key.expose(),
        ]);
        self.tokens = pool.cache(&key, TOKEN_MARGIN, self.api.clock().now());
        self
    }

    /// What the operator must grant, for error messages.
    fn delegation_hint(&self) -> String {
        format!(
            "grant domain-wide delegation to client id {} for the scopes {} (admin console > security > api controls)",
            self.client_id.as_deref().unwrap_or(&self.client_email),
            GOOGLE_SCOPES.join(",")
        )
    }

    /// Classifies the token endpoint's OAuth error (RFC 6749 §5.2, as Google answers it).
    fn token_verdict(&self, response: &ApiResponse) -> Verdict {
        let status = response.status.as_u16();
        if response.status.is_success() {
            return Verdict::Accept;
        }
        if matches!(status, 429 | 500 | 502 | 503 | 504) {
            return Verdict::Retry;
        }
        let body: Value = serde_json::from_slice(&response.body).unwrap_or_default();
        let code = body.get("error").and_then(Value::as_str).unwrap_or("");
        let description = body.get("error_description").and_then(Value::as_str).unwrap_or("");
        let detail = format!("token endpoint answered {status} {code}: {description}");
        Verdict::Fail(match code {
            "unauthorized_client" => ConnectorError::Forbidden(format!(
                "domain-wide delegation not granted for these scopes: {}; {detail}",
                self.delegation_hint()
            )),
            "invalid_grant" | "invalid_request"
                if description.contains("email or User ID") || description.contains("impersonation") =>
            {
                ConnectorError::Unauthorized(format!(
                    "the admin to impersonate ({}) is not a user of this google workspace: {detail}",
                    self.config.admin_email
                ))
            }
            "invalid_grant" | "invalid_client" | "deleted_client" | "disabled_client" => {
                ConnectorError::Unauthorized(format!(
                    "the service account key of {} was rejected (deleted, rotated or disabled?): {detail}",
                    self.client_email
                ))
            }
            "invalid_scope" | "access_denied" => {
                ConnectorError::Forbidden(format!("{detail}; {}", self.delegation_hint()))
            }
            _ if status == 400 || status == 401 => ConnectorError::Unauthorized(detail),
            _ if status == 403 => ConnectorError::Forbidden(detail),
            _ => ConnectorError::Http { status, detail },
        })
    }

    /// Classifies a Directory API answer by `error.errors[].reason`
    /// (developers.google.com/workspace/admin/directory/v1/limits).
    fn api_verdict(&self, response: &ApiResponse) -> Verdict {
        let status = response.status.as_u16();
        if response.status.is_success() {
            return Verdict::Accept;
        }
        if matches!(status, 429 | 500 | 502 | 503 | 504) {
            return Verdict::Retry;
        }
        let body: ErrorBody = serde_json::from_slice(&response.body).unwrap_or_default();
        let reason = body.reason();
        if status == 403 && RATE_LIMIT_REASONS.contains(&reason) {
            return Verdict::Throttled;
        }
        let detail = format!("{status} {}: {reason}: {}", response.url.path(), body.error.message);
        Verdict::Fail(match (status, reason) {
            (403, "dailyLimitExceeded") => ConnectorError::RateLimited { wait: None },
            (403, "insufficientPermissions") | (403, "ACCESS_TOKEN_SCOPE_INSUFFICIENT") => {
                ConnectorError::Forbidden(format!("{detail}; a directory scope is missing: {}", self.delegation_hint()))
            }
            (403, "domainCannotUseApis") => ConnectorError::Forbidden(format!(
                "{detail}; api access is disabled for this google workspace (admin console > security > api controls)"
            )),
            (403, _) => ConnectorError::Forbidden(format!(
                "{detail}; {} must be an administrator allowed to read users and groups of customer {}",
                self.config.admin_email, self.config.customer
            )),
            (401, _) => ConnectorError::Unauthorized(detail),
            (404, _) => ConnectorError::NotFound(detail),
            (400, _) => ConnectorError::Protocol(detail),
            _ => ConnectorError::Http { status, detail },
        })
    }

    /// The service-account flow with domain-wide delegation
    /// (developers.google.com/identity/protocols/oauth2/service-account):
    /// an RS256 JWT with `iss` = the service account, `sub` = the admin,
    /// `scope`, `aud` = the token endpoint, `iat`/`exp` at most an hour
    /// apart, posted as `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`.
    async fn access_token(&self) -> Result<Secret, ConnectorError> {
        self.token(false).await
    }

    /// The cached token, or (`fresh`, for `check()`) one fetched now.
    async fn token(&self, fresh: bool) -> Result<Secret, ConnectorError> {
        let now = self.api.clock().now();
        let fetch = || async {
            let claims = serde_json::json!({
                "iss": self.client_email,
                "sub": self.config.admin_email,
                "scope": GOOGLE_SCOPES.join(" "),
                "aud": self.token_url.as_str(),
                "iat": now.timestamp(),
                "exp": now.timestamp() + ASSERTION_LIFETIME_SECS,
            });
            let assertion = sign_rs256(&claims, &self.key, self.key_id.clone(), None)?;
            let form = vec![
                ("grant_type".to_owned(), "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned()),
                ("assertion".to_owned(), assertion.expose().to_owned()),
            ];
            let request = ApiRequest::post_form(self.token_url.clone(), form);
            let response = self.api.send_with(&request, &|r| self.token_verdict(r)).await?;
            let body: Value = response.json()?;
            let token = body
                .get("access_token")
                .and_then(Value::as_str)
                .ok_or_else(|| ConnectorError::Protocol("token response without access_token".into()))?;
            let expires_in = body.get("expires_in").and_then(Value::as_i64).unwrap_or(3600);
            Ok(AccessToken {
                token: Secret::new(token),
                expires_at: self.api.clock().now() + chrono::Duration::seconds(expires_in),
            })
        };
        if fresh { self.tokens.get_fresh(fetch).await } else { self.tokens.get(now, fetch).await }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: Url) -> Result<T, ConnectorError> {
        let request = ApiRequest::get(url).header("accept", "application/json");
        let verdict = |r: &ApiResponse| self.api_verdict(r);
        let token = self.access_token().await?;
        let first = self.api.send_with(&request.clone().authorization("Bearer", &token), &verdict).await;
        let response = match first {
            Err(ConnectorError::Unauthorized(_)) => {
                // The token may have been revoked early: one fresh try.
                self.tokens.invalidate().await;
                let token = self.access_token().await?;
                self.api.send_with(&request.authorization("Bearer", &token), &verdict).await?
            }
            other => other?,
        };
        response.json()
    }

    /// `{api}/admin/directory/v1/{segments…}?{query}`, the api_url's path kept.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, ConnectorError> {
        let mut url =
            self.api_base.join_segments(["admin", "directory", "v1"].into_iter().chain(segments.iter().copied()));
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    fn users_url(&self, query: Option<&str>, max: u32, page: Option<&str>) -> Result<Url, ConnectorError> {
        let max = max.to_string();
        let mut params =
            vec![("customer", self.config.customer.as_str()), ("maxResults", &max), ("projection", "full")];
        if let Some(q) = query {
            params.push(("query", q));
        }
        if let Some(p) = page {
            params.push(("pageToken", p));
        }
        self.url(&["users"], &params)
    }

    fn groups_url(&self, max: u32, page: Option<&str>) -> Result<Url, ConnectorError> {
        let max = max.to_string();
        let mut params = vec![("customer", self.config.customer.as_str()), ("maxResults", &max)];
        if let Some(p) = page {
            params.push(("pageToken", p));
        }
        self.url(&["groups"], &params)
    }

    fn members_url(&self, group: &str, page: Option<&str>) -> Result<Url, ConnectorError> {
        let max = GROUPS_PAGE.to_string();
        let mut params = vec![("maxResults", max.as_str())];
        if let Some(p) = page {
            params.push(("pageToken", p));
        }
        self.url(&["groups", group, "members"], &params)
    }

    /// Lists users (one `query`, or none) page by page; `keep` decides who is
    /// in scope. Writes a sink page per API page and adds the ids written to `seen`.
    async fn list_users(
        &self,
        query: Option<&str>,
        assignment: Assignment,
        keep: &(dyn Fn(&str) -> bool + Sync),
        seen: &mut HashSet<String>,
        out: &mut PageWriter<'_>,
    ) -> Result<(), ConnectorError> {
        let mut page_token: Option<String> = None;
        loop {
            let page: UsersPage = self.get_json(self.users_url(query, USERS_PAGE, page_token.as_deref())?).await?;
            let mut users = Vec::with_capacity(page.users.len());
            for raw in page.users {
                let user = google_user(raw, assignment)?;
                if keep(&user.id) {
                    seen.insert(user.id.clone());
                    users.push(user);
                }
            }
            out.write(Page { users, ..Page::default() }).await?;
            page_token = token(page.next_page_token);
            if page_token.is_none() {
                return Ok(());
            }
        }
    }

    /// Every user below `root`, nested groups expanded breadth-first (each
    /// group read once, so a cycle ends), `CUSTOMER` members noted.
    async fn expand(&self, root: &str) -> Result<Expansion, ConnectorError> {
        let mut expansion = Expansion::default();
        let mut visited: HashSet<String> = HashSet::from([root.to_owned()]);
        let mut queue: VecDeque<String> = VecDeque::from([root.to_owned()]);
        while let Some(group) = queue.pop_front() {
            let mut page_token: Option<String> = None;
            loop {
                let page: MembersPage = self.get_json(self.members_url(&group, page_token.as_deref())?).await?;
                for member in page.members {
                    match member.kind.as_str() {
                        "USER" if !member.id.is_empty() => {
                            expansion.users.insert(member.id);
                        }
                        "GROUP" if !member.id.is_empty() => {
                            if visited.insert(member.id.clone()) {
                                queue.push_back(member.id);
                            } else {
                                debug!(group = %root, nested = %member.id, "nested group already expanded (cycle or diamond)");
                            }
                        }
                        "CUSTOMER" => expansion.everyone = true,
                        _ => {}
                    }
                }
                page_token = token(page.next_page_token);
                if page_token.is_none() {
                    break;
                }
            }
        }
        Ok(expansion)
    }

    fn expansion_of(&self, group: String) -> BoxFuture<'_, Result<(String, Expansion), ConnectorError>> {
        Box::pin(async move {
            let expansion = self.expand(&group).await?;
            Ok((group, expansion))
        })
    }

    /// Expands `groups` [`Self::concurrency`] at a time (one group's member
    /// pages follow each other by `pageToken`; different groups need not
    /// wait for each other), writing each group's memberships as its
    /// expansion completes. At most `concurrency` expansions are held.
    async fn expand_all(
        &self,
        groups: Vec<String>,
        scope: &HashSet<String>,
        out: &mut PageWriter<'_>,
    ) -> Result<(), ConnectorError> {
        let mut reads = ReadQueue::new(self.concurrency);
        for group in groups {
            reads.push(self.expansion_of(group));
        }
        while let Some(read) = reads.next().await {
            let (group, expansion) = read?;
            self.write_memberships(&group, &expansion, scope, out).await?;
        }
        Ok(())
    }

    /// Writes `group`'s memberships: its expanded users that are in `scope`
    /// (all of `scope` when it holds the `CUSTOMER` member).
    async fn write_memberships(
        &self,
        group: &str,
        expansion: &Expansion,
        scope: &HashSet<String>,
        out: &mut PageWriter<'_>,
    ) -> Result<(), ConnectorError> {
        let ids: Vec<&String> = if expansion.everyone {
            let mut all: Vec<&String> = scope.iter().collect();
            all.sort();
            all
        } else {
            expansion.users.iter().filter(|id| scope.contains(*id)).collect()
        };
        for chunk in ids.chunks(MEMBERSHIPS_PER_PAGE) {
            let memberships =
                chunk.iter().map(|id| MembershipChange::Added(Membership::new(group, id.as_str()))).collect();
            out.write(Page { memberships, ..Page::default() }).await?;
        }
        Ok(())
    }

    /// Whole customer or org units: users first (their ids are the scope),
    /// then every group page, each group's members expanded and filtered.
    async fn refresh_by_users(
        &self,
        queries: &[Option<String>],
        out: &mut PageWriter<'_>,
    ) -> Result<(), ConnectorError> {
        let mut scope = HashSet::new();
        for query in queries {
            self.list_users(query.as_deref(), Assignment::Scope, &|_| true, &mut scope, out).await?;
        }
        let mut page_token: Option<String> = None;
        loop {
            let page: GroupsPage = self.get_json(self.groups_url(GROUPS_PAGE, page_token.as_deref())?).await?;
            let groups = page.groups.into_iter().map(google_group).collect::<Result<Vec<_>, _>>()?;
            let ids: Vec<String> = groups.iter().map(|g| g.id.clone()).collect();
            out.write(Page { groups, ..Page::default() }).await?;
            self.expand_all(ids, &scope, out).await?;
            page_token = token(page.next_page_token);
            if page_token.is_none() {
                return Ok(());
            }
        }
    }

    /// Group scope: the configured groups and their expanded members, then
    /// the customer's users filtered to those members (one `users.list`
    /// pass instead of one request per user), then the memberships.
    async fn refresh_by_groups(&self, keys: &[String], out: &mut PageWriter<'_>) -> Result<(), ConnectorError> {
        let mut groups = Vec::with_capacity(keys.len());
        let mut members: HashSet<String> = HashSet::new();
        let mut everyone = false;
        for key in keys {
            let group = google_group(self.get_group(key).await?)?;
            let expansion = self.expand(&group.id).await?;
            members.extend(expansion.users.iter().cloned());
            everyone |= expansion.everyone;
            groups.push((group, expansion));
        }
        let mut scope = HashSet::new();
        let keep = |id: &str| everyone || members.contains(id);
        self.list_users(None, Assignment::Group, &keep, &mut scope, out).await?;
        let (records, expansions): (Vec<Group>, Vec<Expansion>) = groups.into_iter().unzip();
        let ids: Vec<String> = records.iter().map(|g| g.id.clone()).collect();
        out.write(Page { groups: records, ..Page::default() }).await?;
        for (id, expansion) in ids.iter().zip(&expansions) {
            self.write_memberships(id, expansion, &scope, out).await?;
        }
        Ok(())
    }

    /// `groups.get`, with an unknown group named.
    async fn get_group(&self, key: &str) -> Result<Value, ConnectorError> {
        self.get_json(self.url(&["groups", key], &[])?).await.map_err(|e| match e {
            ConnectorError::NotFound(d) => ConnectorError::NotFound(format!("google group {key} does not exist: {d}")),
            other => other,
        })
    }

    /// A 400/404 to a customer-wide list means the customer id is unknown
    /// (developers.google.com/workspace/admin/reseller/v1/support/directory_api_common_errors).
    fn unknown_customer(&self, e: ConnectorError) -> ConnectorError {
        match e {
            ConnectorError::Protocol(d) | ConnectorError::NotFound(d) => ConnectorError::NotFound(format!(
                "customer {:?} is unknown or not administered by {}: {d}",
                self.config.customer, self.config.admin_email
            )),
            other => other,
        }
    }
}

#[async_trait]
impl PullConnector for GoogleConnector {
    fn kind(&self) -> &'static str {
        "google"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { incremental: false }
    }

    async fn check(&self) -> Result<CheckReport, ConnectorError> {
        // A fresh token: the key and the delegation are what is tested, not a cached token.
        self.token(true).await?;
        let scope = match &self.config.scope {
            GoogleScope::Customer => {
                self.get_json::<Value>(self.users_url(None, 1, None)?).await.map_err(|e| self.unknown_customer(e))?;
                "the whole customer".to_owned()
            }
            GoogleScope::OrgUnits { paths } => {
                self.get_json::<Value>(self.users_url(None, 1, None)?).await.map_err(|e| self.unknown_customer(e))?;
                for path in paths {
                    let query = org_unit_query(path);
                    self.get_json::<Value>(self.users_url(Some(&query), 1, None)?).await.map_err(|e| match e {
                        ConnectorError::Protocol(d) | ConnectorError::NotFound(d) => {
                            ConnectorError::NotFound(format!("org unit {path} does not exist: {d}"))
                        }
                        other => other,
                    })?;
                }
                format!("org units {}", paths.join(", "))
            }
            GoogleScope::Groups { groups } => {
                self.get_json::<Value>(self.users_url(None, 1, None)?).await.map_err(|e| self.unknown_customer(e))?;
                for key in groups {
                    self.get_group(key).await?;
                    self.get_json::<Value>(self.members_url(key, None)?).await?;
                }
                format!("groups {}", groups.join(", "))
            }
        };
        self.get_json::<Value>(self.groups_url(1, None)?).await.map_err(|e| self.unknown_customer(e))?;
        Ok(CheckReport {
            summary: format!(
                "google customer {} as {} via {}: {scope} readable, users and groups readable",
                self.config.customer, self.config.admin_email, self.client_email
            ),
        })
    }

    async fn pull(&self, mode: &PullMode, out: &mut PageWriter<'_>) -> Result<Option<Cursor>, ConnectorError> {
        if let PullMode::Resume { .. } = mode {
            return Err(ConnectorError::ResyncRequired("the google directory api has no change feed".into()));
        }
        match &self.config.scope {
            GoogleScope::Customer => self.refresh_by_users(&[None], out).await?,
            GoogleScope::OrgUnits { paths } => {
                let queries: Vec<Option<String>> = paths.iter().map(|p| Some(org_unit_query(p))).collect();
                self.refresh_by_users(&queries, out).await?
            }
            GoogleScope::Groups { groups } => self.refresh_by_groups(groups, out).await?,
        }
        Ok(None)
    }

    fn wait_log(&self) -> Option<Arc<WaitLog>> {
        Some(self.api.wait_log())
    }
}

/// Google as directory-sync registers it (one line of its connector registry):
/// the kind `google`, its secret fields, and a connector whose tokens come
/// from the service's token pool. The conformance kit builds it the same way.
#[derive(Debug)]
pub struct Google;

impl muster_connector::ConnectorSpec for Google {
    const KIND: &'static str = "google";
    const TITLE: &'static str = "Google Workspace (Admin SDK Directory API; a full listing every pull)";
    const SECRET_FIELDS: &'static [&'static str] = SECRET_FIELDS;
    type Config = GoogleConfig;

    fn connect(
        config: GoogleConfig,
        clock: Arc<dyn Clock>,
        tokens: &TokenPool,
    ) -> Result<Box<dyn PullConnector>, ConnectorError> {
        Ok(Box::new(GoogleConnector::new(config, clock)?.with_token_pool(tokens)))
    }
}
