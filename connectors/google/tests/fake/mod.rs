//! A fake Google Workspace for tests, bound to 127.0.0.1:0. Shapes follow
//! Google's documentation:
//! - Admin SDK Directory API reference (developers.google.com/workspace/admin/directory/reference/rest/v1):
//!   `users.list` `GET /admin/directory/v1/users?customer=&maxResults=(≤500)&pageToken=&projection=&query=`
//!   answering `{"kind": "admin#directory#users", "etag", "users": [...], "nextPageToken"}`
//!   (`users` left out when empty, no token on the last page); a user
//!   `{"kind": "admin#directory#user", "id", "primaryEmail", "name": {"givenName",
//!   "familyName", "fullName"}, "isAdmin", "suspended", "archived", "orgUnitPath", "customerId", …}`;
//!   `groups.list` `GET /admin/directory/v1/groups?customer=&maxResults=(≤200)`
//!   (`{"kind": "admin#directory#groups", "groups": [{"kind": "admin#directory#group",
//!   "id", "email", "name", "description", "directMembersCount"}]}`); `groups.get`
//!   `GET /admin/directory/v1/groups/{groupKey}` (email or id); `members.list`
//!   `GET /admin/directory/v1/groups/{groupKey}/members?maxResults=(≤200)` (`{"kind":
//!   "admin#directory#members", "members": [{"kind": "admin#directory#member", "id",
//!   "email", "role", "type": USER|GROUP|CUSTOMER|EXTERNAL, "status"}]}`);
//! - search-users guide (…/directory/v1/guides/search-users): `query=orgUnitPath='/Eng'`
//!   matches the org unit and those below it; an unknown org unit is refused
//!   with 400 `invalid` ("Invalid Input: INVALID_OU_ID");
//! - errors `{"error": {"code", "message", "errors": [{"message", "domain",
//!   "reason"}], "status"}}`; limits page (…/directory/v1/limits): 403
//!   `userRateLimitExceeded`/`quotaExceeded` and 429 `rateLimitExceeded`;
//!   401 `authError`; 403 `forbidden` "Not Authorized to access this
//!   resource/api" for a non-admin; 400 `badRequest` for an unknown
//!   `customer` (…/reseller/v1/support/directory_api_common_errors); 404 `notFound`;
//! - OAuth 2.0 for server-to-server applications (developers.google.com/identity/protocols/oauth2/service-account):
//!   `POST /token` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
//!   and an RS256 `assertion` (`iss`, `sub`, `scope`, `aud`, `iat`, `exp` ≤ 1 h);
//!   errors `{"error", "error_description"}`: `invalid_grant` ("Invalid JWT
//!   Signature.", "Invalid email or User ID"), 401 `unauthorized_client` when
//!   the delegation does not grant a requested scope.
//!
//! - Google sends no rate-limit headers (no remaining, no reset) and, as the
//!   limits page says, its throttling answers ask for exponential backoff:
//!   the reason is in the body.
//!
//! With [`GoogleFake::start_at`] every route lives under a path prefix (a
//! proxy in front of Google): `base` then includes it.
//! [`GoogleFake::set_flakiness`] makes a share of the data requests fail (429
//! `rateLimitExceeded` and 403 `userRateLimitExceeded` in turn, without
//! `Retry-After`; 500 and 503 `backendError`; a 2 s hang ending in 504).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::result_large_err, dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use muster_connector::conformance::{FLAKY_HANG, Failure, FakeDirectory, FakeLoad, FakeUser, FlakyAnswer, FlakyTally};
use serde_json::{Value, json};

pub const CLIENT_EMAIL: &str = "muster-sync@muster-test.iam.gserviceaccount.com";
pub const CLIENT_ID: &str = "109876543210987654321";
pub const KEY_ID: &str = "5e1f0c9d2a7b4c3e8f6a1b0c9d8e7f6a5b4c3d2e";
pub const ADMIN: &str = "admin@example.com";
/// A user of the domain without admin privileges: tokens are issued for
/// them, the Directory API answers 403 `forbidden`.
pub const NOT_ADMIN: &str = "staff@example.com";
pub const CUSTOMER_ID: &str = "C03az79cb";
pub const RETRY_AFTER_SECS: u64 = 2;
const PUBLIC_KEY: &str = include_str!("../test-key.pub.pem");

struct FUser {
    email: String,
    given: String,
    family: String,
    suspended: bool,
    archived: bool,
    org_unit: String,
}

struct FGroup {
    email: String,
    name: String,
    /// (id, type) in insertion order.
    members: Vec<(String, &'static str)>,
}

struct St {
    base: String,
    page_size: usize,
    next_id: u64,
    users: BTreeMap<String, FUser>,
    groups: BTreeMap<String, FGroup>,
    org_units: BTreeSet<String>,
    granted: BTreeSet<String>,
    /// access token -> impersonated user
    tokens: HashMap<String, String>,
    failures: VecDeque<Failure>,
    fail_after: Option<(usize, Failure)>,
    rate_limits_sent: u64,
    hidden: bool,
    /// A `set_hidden` waiting for the next listing to start: a misconfigured scope hides
    /// a whole listing, never its second half (a listing in flight when a test flips
    /// the switch would otherwise see users but no groups).
    hidden_next: Option<bool>,
    requests: Vec<String>,
    /// Requests in flight, failures by status, flakiness, latency.
    load: FakeLoad,
}

#[derive(Clone)]
pub struct GoogleFake {
    st: Arc<Mutex<St>>,
    pub base: String,
}

type Shared = Arc<Mutex<St>>;

pub const ALL_SCOPES: [&str; 3] = [
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly",
];

impl GoogleFake {
    pub async fn start(page_size: usize) -> Self {
        Self::start_at(page_size, "").await
    }

    /// A fake whose routes live under `prefix` (`/google`): a proxy in front of Google.
    pub async fn start_at(page_size: usize, prefix: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}{prefix}", listener.local_addr().unwrap());
        let st = Arc::new(Mutex::new(St {
            base: base.clone(),
            page_size,
            next_id: 0,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            org_units: BTreeSet::from(["/".to_owned()]),
            granted: ALL_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            tokens: HashMap::new(),
            failures: VecDeque::new(),
            fail_after: None,
            rate_limits_sent: 0,
            hidden: false,
            hidden_next: None,
            requests: Vec::new(),
            load: FakeLoad::default(),
        }));
        let router = Router::new()
            .route("/token", post(token))
            .route("/admin/directory/v1/users", get(list_users))
            .route("/admin/directory/v1/groups", get(list_groups))
            .route("/admin/directory/v1/groups/{key}", get(get_group))
            .route("/admin/directory/v1/groups/{key}/members", get(list_members))
            .layer(middleware::from_fn_with_state(st.clone(), gate))
            .with_state(st.clone());
        let router = if prefix.is_empty() { router } else { Router::new().nest(prefix, router) };
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { st, base }
    }

    /// How many requests reached the token endpoint.
    pub fn token_requests(&self) -> usize {
        self.st.lock().unwrap().requests.iter().filter(|r| r.starts_with("POST /token")).count()
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.base)
    }

    /// The standard JSON key of the fake's service account.
    pub fn key_json(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": "muster-test",
            "private_key_id": KEY_ID,
            "private_key": include_str!("../test-key.pem"),
            "client_email": CLIENT_EMAIL,
            "client_id": CLIENT_ID,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_url(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/muster-sync%40muster-test.iam.gserviceaccount.com",
        })
        .to_string()
    }

    pub fn requests(&self) -> Vec<String> {
        self.st.lock().unwrap().requests.clone()
    }

    /// The next request answers `status` (Google's error body: `backendError`
    /// for a 5xx), with `Retry-After` when given.
    pub fn fail_next_status(&self, status: u16, retry_after: Option<u64>) {
        self.st.lock().unwrap().load.fail_next_status(status, retry_after);
    }

    /// Every data request takes this long to answer, so requests overlap.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.st.lock().unwrap().load.set_latency(latency);
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.st.lock().unwrap().load.max_in_flight()
    }

    /// The scopes the domain-wide delegation grants the client id.
    pub fn grant_only(&self, scopes: &[&str]) {
        self.st.lock().unwrap().granted = scopes.iter().map(|s| (*s).to_owned()).collect();
    }

    pub fn move_to_org_unit(&self, user: &str, path: &str) {
        let mut s = self.st.lock().unwrap();
        s.org_units.insert(path.to_owned());
        if let Some(u) = s.users.get_mut(user) {
            u.org_unit = path.to_owned();
        }
    }

    pub fn archive(&self, user: &str) {
        if let Some(u) = self.st.lock().unwrap().users.get_mut(user) {
            u.archived = true;
        }
    }

    /// Puts group `child` into group `parent` (a `GROUP` member).
    pub fn nest(&self, parent: &str, child: &str) {
        if let Some(g) = self.st.lock().unwrap().groups.get_mut(parent) {
            g.members.push((child.to_owned(), "GROUP"));
        }
    }

    /// Adds the `CUSTOMER` member ("all users in the domain") to a group.
    pub fn add_everyone(&self, group: &str) {
        if let Some(g) = self.st.lock().unwrap().groups.get_mut(group) {
            g.members.push((CUSTOMER_ID.to_owned(), "CUSTOMER"));
        }
    }

    /// Adds a member from outside the domain (an `EXTERNAL` member with an id
    /// that `users.list` never returns).
    pub fn add_external(&self, group: &str, id: &str) {
        if let Some(g) = self.st.lock().unwrap().groups.get_mut(group) {
            g.members.push((id.to_owned(), "USER"));
        }
    }
}

fn google_error(status: StatusCode, reason: &str, domain: &str, message: &str) -> Response {
    let grpc_status = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        _ => "UNAVAILABLE",
    };
    let body = json!({"error": {"code": status.as_u16(), "message": message, "errors": [{"message": message, "domain": domain, "reason": reason}], "status": grpc_status}});
    (status, axum::Json(body)).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": error, "error_description": description}))).into_response()
}

fn failure(s: &mut St, f: Failure, token_endpoint: bool) -> Response {
    match (f, token_endpoint) {
        // Google documents no throttling body for its token endpoint: an OAuth-style error is assumed.
        (Failure::RateLimited, true) => {
            oauth_error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", "Rate limit exceeded.")
        }
        (Failure::RateLimited, false) => {
            // Alternate the two documented throttling answers.
            s.rate_limits_sent += 1;
            if s.rate_limits_sent % 2 == 1 {
                google_error(StatusCode::FORBIDDEN, "userRateLimitExceeded", "usageLimits", "User Rate Limit Exceeded")
            } else {
                let mut r = google_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rateLimitExceeded",
                    "usageLimits",
                    "Rate Limit Exceeded",
                );
                r.headers_mut().insert("retry-after", HeaderValue::from_str(&RETRY_AFTER_SECS.to_string()).unwrap());
                r
            }
        }
        (Failure::ServerError, true) => {
            oauth_error(StatusCode::SERVICE_UNAVAILABLE, "internal_failure", "Backend Error")
        }
        (Failure::ServerError, false) => {
            google_error(StatusCode::SERVICE_UNAVAILABLE, "backendError", "global", "Backend Error")
        }
        (Failure::Unauthorized, true) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT Signature.")
        }
        (Failure::Unauthorized, false) => {
            google_error(StatusCode::UNAUTHORIZED, "authError", "global", "Invalid Credentials")
        }
    }
}

/// A Directory API error of `status`: `backendError` for a 5xx.
fn status_error(status: u16, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = match status {
        429 => google_error(code, "rateLimitExceeded", "usageLimits", "Rate Limit Exceeded"),
        504 => google_error(code, "deadlineExceeded", "global", "Deadline expired before operation could complete."),
        _ => google_error(code, "backendError", "global", "Backend Error"),
    };
    if let Some(secs) = retry_after {
        r.headers_mut().insert("retry-after", HeaderValue::from_str(&secs.to_string()).unwrap());
    }
    r
}

/// What the gate does with a request.
enum Admit {
    Answer(Response),
    /// Say nothing for [`FLAKY_HANG`], then 504.
    Hang,
    Pass,
}

impl St {
    fn admit(&mut self, request: &Request, token_endpoint: bool) -> Admit {
        if let Some(f) = self.failures.pop_front() {
            return Admit::Answer(failure(self, f, token_endpoint));
        }
        if let Some((left, f)) = self.fail_after {
            if left == 0 {
                return Admit::Answer(failure(self, f, token_endpoint));
            }
            self.fail_after = Some((left - 1, f));
        }
        if let Some((status, retry_after)) = self.load.next_status() {
            return Admit::Answer(status_error(status, retry_after));
        }
        if !token_endpoint && let Some(answer) = self.load.next_flaky() {
            return match answer {
                // The two documented throttling answers in turn, neither with Retry-After.
                FlakyAnswer::RateLimited => {
                    self.rate_limits_sent += 1;
                    Admit::Answer(if self.rate_limits_sent % 2 == 1 {
                        status_error(429, None)
                    } else {
                        google_error(
                            StatusCode::FORBIDDEN,
                            "userRateLimitExceeded",
                            "usageLimits",
                            "User Rate Limit Exceeded",
                        )
                    })
                }
                FlakyAnswer::ServerError => Admit::Answer(status_error(500, None)),
                FlakyAnswer::Unavailable => Admit::Answer(status_error(503, None)),
                FlakyAnswer::Hang => Admit::Hang,
            };
        }
        if !token_endpoint {
            let auth = request.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            let Some(subject) = auth.strip_prefix("Bearer ").and_then(|t| self.tokens.get(t)) else {
                return Admit::Answer(failure(self, Failure::Unauthorized, false));
            };
            if subject != ADMIN {
                return Admit::Answer(google_error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "global",
                    "Not Authorized to access this resource/api",
                ));
            }
        }
        Admit::Pass
    }
}

async fn gate(State(st): State<Shared>, request: Request, next: Next) -> Response {
    let token_endpoint = request.uri().path() == "/token";
    let (admit, latency) = {
        let mut s = st.lock().unwrap();
        s.requests.push(format!("{} {}", request.method(), request.uri()));
        s.load.arrive();
        (s.admit(&request, token_endpoint), s.load.latency())
    };
    let response = match admit {
        Admit::Answer(r) => r,
        Admit::Hang => {
            tokio::time::sleep(FLAKY_HANG).await;
            status_error(504, None)
        }
        Admit::Pass => {
            if !latency.is_zero() && !token_endpoint {
                tokio::time::sleep(latency).await;
            }
            next.run(request).await
        }
    };
    st.lock().unwrap().load.leave();
    response
}

fn form(body: &str) -> HashMap<String, String> {
    muster_connector::http::Url::parse(&format!("http://x/?{body}")).unwrap().query_pairs().into_owned().collect()
}

async fn token(State(st): State<Shared>, body: String) -> Response {
    let f = form(&body);
    if f.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "Invalid grant_type.");
    }
    let mut s = st.lock().unwrap();
    let assertion = f.get("assertion").cloned().unwrap_or_default();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[format!("{}/token", s.base)]);
    v.set_issuer(&[CLIENT_EMAIL]);
    let kid_ok = jsonwebtoken::decode_header(&assertion).map(|h| h.kid.as_deref() == Some(KEY_ID)).unwrap_or(false);
    let claims = match jsonwebtoken::decode::<Value>(&assertion, &key, &v) {
        Ok(data) if kid_ok => data.claims,
        _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT Signature."),
    };
    let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
    if exp - iat > 3600 || exp <= iat {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let subject = claims["sub"].as_str().unwrap_or("").to_owned();
    if subject != ADMIN && subject != NOT_ADMIN {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid email or User ID");
    }
    let scopes: Vec<&str> = claims["scope"].as_str().unwrap_or("").split_whitespace().collect();
    if scopes.is_empty() || scopes.iter().any(|sc| !s.granted.contains(*sc)) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
        );
    }
    let token = format!("ya29.fake-{}", s.tokens.len());
    s.tokens.insert(token.clone(), subject);
    axum::Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

/// Reads `maxResults` and `pageToken`; the page size is the smaller of the
/// asked one and the fake's.
fn paging(s: &St, q: &HashMap<String, String>, limit: usize) -> Result<(usize, usize), Response> {
    let max = match q.get("maxResults") {
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=limit).contains(&n) => n,
            _ => {
                return Err(google_error(StatusCode::BAD_REQUEST, "invalid", "global", "Invalid Input: maxResults"));
            }
        },
        None => 100.min(limit),
    };
    let offset = match q.get("pageToken") {
        Some(t) => match t.strip_prefix("CjQ").and_then(|x| usize::from_str_radix(x, 16).ok()) {
            Some(o) => o,
            None => return Err(google_error(StatusCode::BAD_REQUEST, "invalid", "global", "Invalid Input: pageToken")),
        },
        None => 0,
    };
    Ok((max.min(s.page_size), offset))
}

fn page(kind: &str, key: &str, items: Vec<Value>, size: usize, offset: usize) -> Response {
    let end = (offset + size).min(items.len());
    let slice = &items[offset.min(items.len())..end];
    let mut body = json!({"kind": kind, "etag": "\"fake-etag\""});
    if !slice.is_empty() {
        body[key] = json!(slice);
    }
    if end < items.len() {
        body["nextPageToken"] = json!(format!("CjQ{end:x}"));
    }
    axum::Json(body).into_response()
}

fn customer_ok(q: &HashMap<String, String>) -> Result<(), Response> {
    match q.get("customer").map(String::as_str) {
        Some("my_customer") | Some(CUSTOMER_ID) => Ok(()),
        _ => Err(google_error(StatusCode::BAD_REQUEST, "badRequest", "global", "Bad Request")),
    }
}

fn in_org_unit(user: &str, path: &str) -> bool {
    path == "/" || user == path || user.starts_with(&format!("{}/", path.trim_end_matches('/')))
}

impl St {
    fn user_json(&self, id: &str, u: &FUser) -> Value {
        let mut v = json!({
            "kind": "admin#directory#user",
            "id": id,
            "etag": "\"fake-etag\"",
            "primaryEmail": u.email,
            "name": {"givenName": u.given, "familyName": u.family, "fullName": format!("{} {}", u.given, u.family)},
            "isAdmin": false,
            "isDelegatedAdmin": false,
            "creationTime": "2024-01-01T00:00:00.000Z",
            "agreedToTerms": true,
            "suspended": u.suspended,
            "archived": u.archived,
            "changePasswordAtNextLogin": false,
            "ipWhitelisted": false,
            "emails": [{"address": u.email, "primary": true}],
            "customerId": CUSTOMER_ID,
            "orgUnitPath": u.org_unit,
            "isMailboxSetup": true,
            "includeInGlobalAddressList": true,
        });
        if u.suspended {
            v["suspensionReason"] = json!("ADMIN");
        }
        v
    }

    fn group_json(&self, id: &str, g: &FGroup) -> Value {
        json!({
            "kind": "admin#directory#group",
            "id": id,
            "etag": "\"fake-etag\"",
            "email": g.email,
            "name": g.name,
            "directMembersCount": g.members.len().to_string(),
            "description": format!("{} group", g.name),
            "adminCreated": true,
        })
    }

    fn find_group(&self, key: &str) -> Option<(&String, &FGroup)> {
        self.groups.iter().find(|(id, g)| *id == key || g.email.eq_ignore_ascii_case(key))
    }
}

async fn list_users(State(st): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = st.lock().unwrap();
    if q.get("pageToken").is_none_or(|t| t.is_empty())
        && let Some(hidden) = s.hidden_next.take()
    {
        s.hidden = hidden;
    }
    if let Err(r) = customer_ok(&q) {
        return r;
    }
    let (size, offset) = match paging(&s, &q, 500) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let org_unit = match q.get("query") {
        None => None,
        Some(query) => {
            let Some(value) = query.strip_prefix("orgUnitPath=") else {
                return google_error(StatusCode::BAD_REQUEST, "invalid", "global", "Invalid Input");
            };
            let path = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(value).replace("\\'", "'");
            if !s.org_units.contains(&path) {
                return google_error(StatusCode::BAD_REQUEST, "invalid", "global", "Invalid Input: INVALID_OU_ID");
            }
            Some(path)
        }
    };
    let mut items = Vec::new();
    if !s.hidden {
        for (id, u) in &s.users {
            if org_unit.as_deref().is_none_or(|p| in_org_unit(&u.org_unit, p)) {
                items.push(s.user_json(id, u));
            }
        }
    }
    page("admin#directory#users", "users", items, size, offset)
}

async fn list_groups(State(st): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = st.lock().unwrap();
    if let Err(r) = customer_ok(&q) {
        return r;
    }
    let (size, offset) = match paging(&s, &q, 200) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let items = if s.hidden { Vec::new() } else { s.groups.iter().map(|(id, g)| s.group_json(id, g)).collect() };
    page("admin#directory#groups", "groups", items, size, offset)
}

async fn get_group(State(st): State<Shared>, Path(key): Path<String>) -> Response {
    let s = st.lock().unwrap();
    match s.find_group(&key) {
        Some((id, g)) if !s.hidden => axum::Json(s.group_json(id, g)).into_response(),
        _ => google_error(StatusCode::NOT_FOUND, "notFound", "global", "Resource Not Found: groupKey"),
    }
}

async fn list_members(
    State(st): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    let (size, offset) = match paging(&s, &q, 200) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some((_, g)) = s.find_group(&key) else {
        return google_error(StatusCode::NOT_FOUND, "notFound", "global", "Resource Not Found: groupKey");
    };
    let items: Vec<Value> = if s.hidden {
        Vec::new()
    } else {
        g.members
            .iter()
            .map(|(id, kind)| match *kind {
                "CUSTOMER" => json!({"kind": "admin#directory#member", "etag": "\"fake-etag\"", "id": id, "role": "MEMBER", "type": "CUSTOMER"}),
                _ => {
                    let email = match *kind {
                        "GROUP" => s.groups.get(id).map(|g| g.email.clone()),
                        _ => s.users.get(id).map(|u| u.email.clone()),
                    }
                    .unwrap_or_else(|| format!("{id}@partner.example.org"));
                    json!({"kind": "admin#directory#member", "etag": "\"fake-etag\"", "id": id, "email": email, "role": "MEMBER", "type": kind, "status": "ACTIVE"})
                }
            })
            .collect()
    };
    page("admin#directory#members", "members", items, size, offset)
}

impl FakeDirectory for GoogleFake {
    fn page_size(&self) -> usize {
        self.st.lock().unwrap().page_size
    }

    fn create_user(&self, user: &FakeUser) -> String {
        let mut s = self.st.lock().unwrap();
        s.next_id += 1;
        let id = format!("1{:020}", 4_200_000 + s.next_id);
        s.users.insert(
            id.clone(),
            FUser {
                email: user.user_name.clone(),
                given: user.given_name.clone(),
                family: user.family_name.clone(),
                suspended: !user.active,
                archived: false,
                org_unit: "/".into(),
            },
        );
        id
    }

    fn update_user(&self, id: &str, user: &FakeUser) {
        let mut s = self.st.lock().unwrap();
        if let Some(u) = s.users.get_mut(id) {
            u.email = user.user_name.clone();
            u.given = user.given_name.clone();
            u.family = user.family_name.clone();
            u.suspended = !user.active;
            if user.active {
                u.archived = false;
            }
        }
    }

    fn delete_user(&self, id: &str) {
        let mut s = self.st.lock().unwrap();
        s.users.remove(id);
        for g in s.groups.values_mut() {
            g.members.retain(|(m, _)| m != id);
        }
    }

    fn create_group(&self, name: &str) -> String {
        let mut s = self.st.lock().unwrap();
        s.next_id += 1;
        let id = format!("03x8tuzt{:06x}", s.next_id);
        s.groups.insert(
            id.clone(),
            FGroup { email: format!("{name}@example.com"), name: name.to_owned(), members: Vec::new() },
        );
        id
    }

    fn delete_group(&self, id: &str) {
        let mut s = self.st.lock().unwrap();
        s.groups.remove(id);
        for g in s.groups.values_mut() {
            g.members.retain(|(m, _)| m != id);
        }
    }

    fn add_member(&self, group_id: &str, user_id: &str) {
        let mut s = self.st.lock().unwrap();
        let kind = if s.groups.contains_key(user_id) { "GROUP" } else { "USER" };
        if let Some(g) = s.groups.get_mut(group_id)
            && !g.members.iter().any(|(m, _)| m == user_id)
        {
            g.members.push((user_id.to_owned(), kind));
        }
    }

    fn remove_member(&self, group_id: &str, user_id: &str) {
        if let Some(g) = self.st.lock().unwrap().groups.get_mut(group_id) {
            g.members.retain(|(m, _)| m != user_id);
        }
    }

    fn fail_next(&self, failures: &[Failure]) {
        self.st.lock().unwrap().failures.extend(failures.iter().copied());
    }

    fn fail_after(&self, ok_requests: usize, failure: Failure) {
        self.st.lock().unwrap().fail_after = Some((ok_requests, failure));
    }

    fn clear_failures(&self) {
        let mut s = self.st.lock().unwrap();
        s.failures.clear();
        s.fail_after = None;
    }

    /// The Directory API has no cursor to expire: nothing to do.
    fn expire_cursors(&self) {}

    fn set_hidden(&self, hidden: bool) {
        self.st.lock().unwrap().hidden_next = Some(hidden);
    }

    fn set_flakiness(&self, share: f64, seed: u64) {
        self.st.lock().unwrap().load.set_flakiness(share, seed);
    }

    fn flaky_tally(&self) -> FlakyTally {
        self.st.lock().unwrap().load.flaky_tally()
    }
}
