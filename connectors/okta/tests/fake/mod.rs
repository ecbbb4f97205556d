//! A fake Okta org for tests, bound to 127.0.0.1:0. Shapes follow the Okta
//! Management API reference (developer.okta.com/docs/api/openapi/okta-management):
//! - Users `GET /api/v1/users` (limit, after, filter; DEPROVISIONED hidden
//!   unless filtered), `GET /api/v1/users/{id}`;
//! - Groups `GET /api/v1/groups`, `/api/v1/groups/{id}`, `/api/v1/groups/{id}/users`;
//! - Applications `GET /api/v1/apps/{appId}`, `/users?expand=user`
//!   (`scope` USER|GROUP, `_embedded.user`), `/groups?expand=group`, and the
//!   single app user / app group;
//! - System Log `GET /api/v1/logs` (since, after, limit, sortOrder=ASCENDING,
//!   filter): in polling mode the `next` link is always present;
//! - paging by `Link: <…after=…>; rel="next"` (developer.okta.com/docs/api/#pagination);
//! - errors `{errorCode, errorSummary, errorLink, errorId, errorCauses}`:
//!   E0000011 invalid token (401), E0000006 no permission (403), E0000007 not
//!   found (404), E0000047 rate limit (429 with `X-Rate-Limit-*`,
//!   developer.okta.com/docs/reference/rl-best-practices), E0000001 validation (400);
//! - the org authorization server's `/oauth2/v1/token` for client credentials
//!   with `private_key_jwt` (developer.okta.com/docs/guides/implement-oauth-for-okta-serviceapp).
//!
//! - every answer, errors and the token endpoint's included, carries
//!   `X-Rate-Limit-Limit`, `X-Rate-Limit-Remaining` and `X-Rate-Limit-Reset`
//!   (UTC epoch seconds), as Okta sends them (developer.okta.com/docs/reference/rl-best-practices).
//!
//! With [`OktaFake::start_at`] every route lives under a path prefix (a
//! proxy in front of the org): `base` then includes it, and so do the links.
//! [`OktaFake::set_flakiness`] makes a share of the data requests fail (429
//! with `Retry-After: 1`, 500, 503, a 2 s hang ending in 504), each with the
//! rate-limit headers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use muster_connector::conformance::{FLAKY_HANG, Failure, FakeDirectory, FakeLoad, FakeUser, FlakyAnswer, FlakyTally};
use muster_connector::{Clock, ManualClock, SystemClock};
use serde_json::{Value, json};

pub const API_TOKEN: &str = "00okta-test-token";
pub const CLIENT_ID: &str = "0oaservice123";
pub const APP_ID: &str = "0oaapp456";
const PUBLIC_KEY: &str = include_str!("../test-key.pub.pem");

struct FUser {
    login: String,
    first: String,
    last: String,
    status: &'static str,
}

struct Event {
    uuid: String,
    published: DateTime<Utc>,
    kind: String,
    targets: Vec<(String, &'static str)>,
}

struct St {
    base: String,
    page_size: usize,
    app: bool,
    next_id: u64,
    users: BTreeMap<String, FUser>,
    groups: BTreeMap<String, String>,
    members: BTreeMap<String, BTreeSet<String>>,
    app_users: BTreeSet<String>,
    app_groups: BTreeSet<String>,
    events: Vec<Event>,
    generation: u64,
    tokens: BTreeSet<String>,
    failures: VecDeque<Failure>,
    fail_after: Option<(usize, Failure)>,
    hidden: bool,
    /// Rate-limit headers to send: remaining, and reset seconds from now.
    remaining: i64,
    reset_secs: i64,
    /// Requests in flight, failures by status, flakiness, latency.
    load: FakeLoad,
    pub requests: Vec<String>,
}

#[derive(Clone)]
pub struct OktaFake {
    st: Arc<Mutex<St>>,
    clock: Arc<dyn Clock>,
    pub base: String,
}

type Shared = (Arc<Mutex<St>>, Arc<dyn Clock>);

impl OktaFake {
    /// `app`: the org has an app `APP_ID`, and every user and group the kit
    /// creates is assigned to it.
    pub async fn start(page_size: usize, app: bool, clock: Arc<ManualClock>) -> Self {
        Self::start_at(page_size, app, clock, "").await
    }

    /// A fake whose routes live under `prefix` (`/okta`): a proxy in front of the org.
    pub async fn start_at(page_size: usize, app: bool, clock: Arc<ManualClock>, prefix: &str) -> Self {
        Self::serve(page_size, app, clock, prefix).await
    }

    /// A fake on the wall clock, for connectors that wait for real (its
    /// reset headers then name real times).
    pub async fn start_live(page_size: usize, app: bool) -> Self {
        Self::serve(page_size, app, Arc::new(SystemClock), "").await
    }

    async fn serve(page_size: usize, app: bool, clock: Arc<dyn Clock>, prefix: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}{prefix}", listener.local_addr().unwrap());
        let st = Arc::new(Mutex::new(St {
            base: base.clone(),
            page_size,
            app,
            next_id: 0,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            members: BTreeMap::new(),
            app_users: BTreeSet::new(),
            app_groups: BTreeSet::new(),
            events: Vec::new(),
            generation: 0,
            tokens: BTreeSet::new(),
            failures: VecDeque::new(),
            fail_after: None,
            hidden: false,
            remaining: 599,
            reset_secs: 45,
            load: FakeLoad::default(),
            requests: Vec::new(),
        }));
        let shared: Shared = (st.clone(), clock.clone());
        let router = Router::new()
            .route("/oauth2/v1/token", post(token))
            .route("/api/v1/users", get(list_users))
            .route("/api/v1/users/{id}", get(get_user))
            .route("/api/v1/groups", get(list_groups))
            .route("/api/v1/groups/{id}", get(get_group))
            .route("/api/v1/groups/{id}/users", get(group_users))
            .route("/api/v1/apps/{app}", get(get_app))
            .route("/api/v1/apps/{app}/users", get(app_users))
            .route("/api/v1/apps/{app}/users/{id}", get(app_user))
            .route("/api/v1/apps/{app}/groups", get(app_groups))
            .route("/api/v1/apps/{app}/groups/{id}", get(app_group))
            .route("/api/v1/logs", get(logs))
            .layer(middleware::from_fn_with_state(shared.clone(), gate))
            .with_state(shared);
        let router = if prefix.is_empty() { router } else { Router::new().nest(prefix, router) };
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { st, clock, base }
    }

    /// How many requests reached the token endpoint.
    pub fn token_requests(&self) -> usize {
        self.st.lock().unwrap().requests.iter().filter(|r| r.starts_with("POST /oauth2/v1/token")).count()
    }

    pub fn requests(&self) -> Vec<String> {
        self.st.lock().unwrap().requests.clone()
    }

    /// The next responses say the rate-limit window is used up.
    pub fn set_remaining(&self, remaining: i64) {
        self.st.lock().unwrap().remaining = remaining;
    }

    /// The window the rate-limit headers name resets this many seconds after each answer.
    pub fn set_reset_in(&self, secs: i64) {
        self.st.lock().unwrap().reset_secs = secs;
    }

    /// The next request answers `status` (Okta's error body), with
    /// `Retry-After` when given, and the usual rate-limit headers.
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

    /// Takes a user out of the app without deleting it.
    pub fn unassign_user(&self, id: &str) {
        let now = self.clock.now();
        let mut st = self.st.lock().unwrap();
        st.app_users.remove(id);
        st.event(
            now,
            "application.user_membership.remove",
            vec![(id.to_owned(), "User"), (APP_ID.into(), "AppInstance")],
        );
    }

    pub fn event_count(&self) -> usize {
        self.st.lock().unwrap().events.len()
    }
}

impl St {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:017}", self.next_id)
    }

    fn event(&mut self, now: DateTime<Utc>, kind: &str, targets: Vec<(String, &'static str)>) {
        let uuid = format!("{:08x}-0000-11ee-8000-{:012x}", self.events.len(), self.events.len());
        self.events.push(Event { uuid, published: now, kind: kind.to_owned(), targets });
    }

    fn user_json(&self, id: &str) -> Option<Value> {
        let u = self.users.get(id)?;
        Some(json!({
            "id": id,
            "status": u.status,
            "created": "2024-01-01T00:00:00.000Z",
            "activated": null,
            "statusChanged": null,
            "lastLogin": null,
            "lastUpdated": "2024-01-02T00:00:00.000Z",
            "passwordChanged": null,
            "type": {"id": "oty1"},
            "profile": {
                "firstName": u.first,
                "lastName": u.last,
                "mobilePhone": null,
                "secondEmail": null,
                "login": u.login,
                "email": u.login,
            },
            "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
            "_links": {"self": {"href": format!("{}/api/v1/users/{id}", self.base)}},
        }))
    }

    fn group_json(&self, id: &str) -> Option<Value> {
        let name = self.groups.get(id)?;
        Some(json!({
            "id": id,
            "created": "2024-01-01T00:00:00.000Z",
            "lastUpdated": "2024-01-01T00:00:00.000Z",
            "lastMembershipUpdated": "2024-01-01T00:00:00.000Z",
            "objectClass": ["okta:user_group"],
            "type": "OKTA_GROUP",
            "profile": {"name": name, "description": format!("{name} group")},
            "_links": {"self": {"href": format!("{}/api/v1/groups/{id}", self.base)}},
        }))
    }

    fn user_assigned(&self, id: &str) -> Option<&'static str> {
        if self.app_users.contains(id) {
            return Some("USER");
        }
        let via_group = self.app_groups.iter().any(|g| self.members.get(g).is_some_and(|m| m.contains(id)));
        via_group.then_some("GROUP")
    }

    fn app_user_json(&self, id: &str) -> Option<Value> {
        let scope = self.user_assigned(id)?;
        let user = self.user_json(id)?;
        Some(json!({
            "id": id,
            "scope": scope,
            "status": "PROVISIONED",
            "created": "2024-01-01T00:00:00.000Z",
            "credentials": {"userName": user["profile"]["login"]},
            "profile": {},
            "_embedded": {"user": user},
        }))
    }

    fn app_group_json(&self, id: &str) -> Option<Value> {
        if !self.app_groups.contains(id) {
            return None;
        }
        Some(json!({"id": id, "priority": 0, "profile": {}, "_embedded": {"group": self.group_json(id)?}}))
    }

    fn error(status: StatusCode, code: &str, summary: &str) -> Response {
        let body = json!({
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": "oaeTest",
            "errorCauses": [],
        });
        (status, axum::Json(body)).into_response()
    }

    fn failure(&self, failure: Failure, path: &str, now: DateTime<Utc>) -> Response {
        match failure {
            Failure::RateLimited => {
                let mut r = Self::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                );
                let h = r.headers_mut();
                h.insert("x-rate-limit-limit", HeaderValue::from_static("600"));
                h.insert("x-rate-limit-remaining", HeaderValue::from_static("0"));
                h.insert("x-rate-limit-reset", HeaderValue::from_str(&(now.timestamp() + 20).to_string()).unwrap());
                r
            }
            Failure::ServerError => {
                Self::error(StatusCode::INTERNAL_SERVER_ERROR, "E0000009", "Internal Server Error")
            }
            Failure::Unauthorized if path == "/oauth2/v1/token" => (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "invalid_client", "error_description": "The client_assertion signature is invalid."})),
            )
                .into_response(),
            Failure::Unauthorized => Self::error(StatusCode::UNAUTHORIZED, "E0000011", "Invalid token provided"),
        }
    }

    /// One page of `items` (sorted by id) after `after`, with a Link next.
    fn page(&self, path: &str, q: &HashMap<String, String>, items: Vec<(String, Value)>) -> Response {
        let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(200).min(self.page_size);
        let after = q.get("after").cloned().unwrap_or_default();
        let rest: Vec<(String, Value)> = items.into_iter().filter(|(id, _)| *id > after).collect();
        let more = rest.len() > limit;
        let page: Vec<(String, Value)> = rest.into_iter().take(limit).collect();
        let mut headers = HeaderMap::new();
        let self_link = format!("<{}{}>; rel=\"self\"", self.base, path);
        headers.append("link", HeaderValue::from_str(&self_link).unwrap());
        if more && let Some((last, _)) = page.last() {
            let mut url = reqwest_url(&format!("{}{}", self.base, path));
            {
                let mut pairs = url.query_pairs_mut();
                for (k, v) in q.iter().filter(|(k, _)| *k != "after") {
                    pairs.append_pair(k, v);
                }
                pairs.append_pair("after", last);
            }
            headers.append("link", HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")).unwrap());
        }
        let body: Vec<Value> = page.into_iter().map(|(_, v)| v).collect();
        (StatusCode::OK, headers, axum::Json(body)).into_response()
    }
}

fn reqwest_url(s: &str) -> muster_connector::http::Url {
    muster_connector::http::Url::parse(s).unwrap()
}

/// What the gate does with a request.
enum Admit {
    Answer(Response),
    /// Say nothing for [`FLAKY_HANG`], then 504.
    Hang,
    Pass,
}

impl St {
    fn admit(&mut self, request: &Request, path: &str, now: DateTime<Utc>) -> Admit {
        if let Some(failure) = self.failures.pop_front() {
            return Admit::Answer(self.failure(failure, path, now));
        }
        if let Some((left, failure)) = self.fail_after {
            if left == 0 {
                return Admit::Answer(self.failure(failure, path, now));
            }
            self.fail_after = Some((left - 1, failure));
        }
        if let Some((status, retry_after)) = self.load.next_status() {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = Self::error(code, "E0000009", code.canonical_reason().unwrap_or("Error"));
            if let Some(secs) = retry_after {
                r.headers_mut().insert("retry-after", HeaderValue::from_str(&secs.to_string()).unwrap());
            }
            if status == 429 {
                // Okta's 429 says the window is spent.
                r.headers_mut().insert("x-rate-limit-remaining", HeaderValue::from_static("0"));
            }
            return Admit::Answer(r);
        }
        let token_endpoint = path == "/oauth2/v1/token";
        if !token_endpoint && let Some(answer) = self.load.next_flaky() {
            return match answer {
                FlakyAnswer::RateLimited => {
                    // A spent window resetting far ahead, and Retry-After naming the wait.
                    let mut r = self.failure(Failure::RateLimited, path, now);
                    let reset = (now.timestamp() + self.reset_secs).to_string();
                    r.headers_mut().insert("x-rate-limit-reset", HeaderValue::from_str(&reset).unwrap());
                    r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
                    Admit::Answer(r)
                }
                FlakyAnswer::ServerError => Admit::Answer(self.failure(Failure::ServerError, path, now)),
                FlakyAnswer::Unavailable => {
                    Admit::Answer(Self::error(StatusCode::SERVICE_UNAVAILABLE, "E0000009", "Service Unavailable"))
                }
                FlakyAnswer::Hang => Admit::Hang,
            };
        }
        if !token_endpoint {
            let auth = request.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            let ok = auth == format!("SSWS {API_TOKEN}")
                || auth.strip_prefix("Bearer ").is_some_and(|t| self.tokens.contains(t));
            if !ok {
                return Admit::Answer(Self::error(StatusCode::UNAUTHORIZED, "E0000011", "Invalid token provided"));
            }
        }
        Admit::Pass
    }
}

/// Counts requests, injects failures, checks credentials, and puts Okta's
/// rate-limit headers on every answer (errors included, as Okta does).
async fn gate(State((st, clock)): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let now = clock.now();
    let (admit, latency) = {
        let mut s = st.lock().unwrap();
        s.requests.push(format!("{} {}", request.method(), request.uri()));
        s.load.arrive();
        (s.admit(&request, &path, now), s.load.latency())
    };
    let mut response = match admit {
        Admit::Answer(r) => r,
        Admit::Hang => {
            tokio::time::sleep(FLAKY_HANG).await;
            St::error(StatusCode::GATEWAY_TIMEOUT, "E0000009", "Gateway Timeout")
        }
        Admit::Pass => {
            if !latency.is_zero() && path != "/oauth2/v1/token" {
                tokio::time::sleep(latency).await;
            }
            next.run(request).await
        }
    };
    let mut s = st.lock().unwrap();
    s.load.leave();
    let remaining = s.remaining.to_string();
    let reset = (now.timestamp() + s.reset_secs).to_string();
    let h = response.headers_mut();
    // A throttling answer sets its own (a spent window); every other answer the current one.
    for (name, value) in
        [("x-rate-limit-limit", "600"), ("x-rate-limit-remaining", &remaining), ("x-rate-limit-reset", &reset)]
    {
        if !h.contains_key(name) {
            h.insert(name, HeaderValue::from_str(value).unwrap());
        }
    }
    response
}

async fn token(State((st, clock)): State<Shared>, body: String) -> Response {
    let form: HashMap<String, String> = url_form(&body);
    let invalid = |d: &str| {
        (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client", "error_description": d})))
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_request"}))).into_response();
    }
    let mut s = st.lock().unwrap();
    let audience = format!("{}/oauth2/v1/token", s.base);
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[CLIENT_ID]);
    let assertion = form.get("client_assertion").cloned().unwrap_or_default();
    let claims = match jsonwebtoken::decode::<Value>(&assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return invalid(&format!("The client_assertion token is invalid: {e}")),
    };
    if claims["sub"] != CLIENT_ID || claims["jti"].as_str().is_none() {
        return invalid("The client_assertion token has an invalid sub or no jti.");
    }
    let scopes = form.get("scope").cloned().unwrap_or_default();
    if scopes
        .split(' ')
        .any(|sc| !["okta.users.read", "okta.groups.read", "okta.apps.read", "okta.logs.read"].contains(&sc))
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_scope", "error_description": "The authorization server resource does not have any configured default scopes, 'scope' must be provided."})),
        )
            .into_response();
    }
    let token = format!("eyJ.access.{}.{}", s.tokens.len(), clock.now().timestamp());
    s.tokens.insert(token.clone());
    axum::Json(json!({"token_type": "Bearer", "expires_in": 3600, "access_token": token, "scope": scopes}))
        .into_response()
}

fn url_form(body: &str) -> HashMap<String, String> {
    let url = reqwest_url(&format!("http://x/?{body}"));
    url.query_pairs().into_owned().collect()
}

fn not_found(what: &str) -> Response {
    St::error(StatusCode::NOT_FOUND, "E0000007", &format!("Not found: Resource not found: {what}"))
}

async fn list_users(State((st, _)): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = st.lock().unwrap();
    let deprovisioned = q.get("filter").is_some_and(|f| f.contains("DEPROVISIONED"));
    let items = if s.hidden {
        Vec::new()
    } else {
        s.users
            .iter()
            .filter(|(_, u)| (u.status == "DEPROVISIONED") == deprovisioned)
            .map(|(id, _)| (id.clone(), s.user_json(id).unwrap()))
            .collect()
    };
    s.page("/api/v1/users", &q, items)
}

async fn get_user(State((st, _)): State<Shared>, Path(id): Path<String>) -> Response {
    let s = st.lock().unwrap();
    match s.user_json(&id) {
        Some(u) => axum::Json(u).into_response(),
        None => not_found(&format!("{id} (User)")),
    }
}

async fn list_groups(State((st, _)): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = st.lock().unwrap();
    let items =
        if s.hidden { Vec::new() } else { s.groups.keys().map(|id| (id.clone(), s.group_json(id).unwrap())).collect() };
    s.page("/api/v1/groups", &q, items)
}

async fn get_group(State((st, _)): State<Shared>, Path(id): Path<String>) -> Response {
    let s = st.lock().unwrap();
    match s.group_json(&id) {
        Some(g) => axum::Json(g).into_response(),
        None => not_found(&format!("{id} (UserGroup)")),
    }
}

async fn group_users(
    State((st, _)): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    let Some(members) = s.members.get(&id) else { return not_found(&format!("{id} (UserGroup)")) };
    let items = members.iter().filter_map(|u| Some((u.clone(), s.user_json(u)?))).collect();
    s.page(&format!("/api/v1/groups/{id}/users"), &q, items)
}

async fn get_app(State((st, _)): State<Shared>, Path(app): Path<String>) -> Response {
    let s = st.lock().unwrap();
    if !s.app || app != APP_ID {
        return not_found(&format!("{app} (AppInstance)"));
    }
    axum::Json(json!({"id": APP_ID, "name": "oidc_client", "label": "Muster", "status": "ACTIVE", "signOnMode": "OPENID_CONNECT"}))
        .into_response()
}

async fn app_users(
    State((st, _)): State<Shared>,
    Path(app): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    if !s.app || app != APP_ID {
        return not_found(&format!("{app} (AppInstance)"));
    }
    let items = if s.hidden {
        Vec::new()
    } else {
        s.users.keys().filter_map(|id| Some((id.clone(), s.app_user_json(id)?))).collect()
    };
    s.page(&format!("/api/v1/apps/{app}/users"), &q, items)
}

async fn app_user(State((st, _)): State<Shared>, Path((app, id)): Path<(String, String)>) -> Response {
    let s = st.lock().unwrap();
    match s.app_user_json(&id).filter(|_| s.app && app == APP_ID) {
        Some(u) => axum::Json(u).into_response(),
        None => not_found(&format!("{id} (AppUser)")),
    }
}

async fn app_groups(
    State((st, _)): State<Shared>,
    Path(app): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    if !s.app || app != APP_ID {
        return not_found(&format!("{app} (AppInstance)"));
    }
    let items = if s.hidden {
        Vec::new()
    } else {
        s.app_groups.iter().filter_map(|id| Some((id.clone(), s.app_group_json(id)?))).collect()
    };
    s.page(&format!("/api/v1/apps/{app}/groups"), &q, items)
}

async fn app_group(State((st, _)): State<Shared>, Path((app, id)): Path<(String, String)>) -> Response {
    let s = st.lock().unwrap();
    match s.app_group_json(&id).filter(|_| s.app && app == APP_ID) {
        Some(g) => axum::Json(g).into_response(),
        None => not_found(&format!("{id} (ApplicationGroupAssignment)")),
    }
}

/// `GET /api/v1/logs` in polling mode (`since` + `sortOrder=ASCENDING`):
/// `after` is this fake's opaque position `g{generation}-{index}`.
async fn logs(State((st, _)): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = st.lock().unwrap();
    if q.get("sortOrder").map(String::as_str) != Some("ASCENDING") {
        return St::error(StatusCode::BAD_REQUEST, "E0000001", "Api validation failed: sortOrder");
    }
    let start = match q.get("after") {
        Some(after) => {
            let parsed = after
                .strip_prefix('g')
                .and_then(|r| r.split_once('-'))
                .and_then(|(g, i)| Some((g.parse::<u64>().ok()?, i.parse::<usize>().ok()?)));
            match parsed {
                Some((g, i)) if g == s.generation => i,
                _ => return St::error(StatusCode::BAD_REQUEST, "E0000001", "Api validation failed: after"),
            }
        }
        None => {
            let since = q.get("since").and_then(|v| DateTime::parse_from_rfc3339(v).ok());
            let Some(since) = since else {
                return St::error(StatusCode::BAD_REQUEST, "E0000001", "Api validation failed: since");
            };
            s.events.iter().position(|e| e.published >= since).unwrap_or(s.events.len())
        }
    };
    let wanted: Vec<String> =
        q.get("filter").map(|f| f.split('"').skip(1).step_by(2).map(str::to_owned).collect()).unwrap_or_default();
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100).min(s.page_size);
    let mut body = Vec::new();
    let mut index = start;
    while index < s.events.len() && body.len() < limit {
        let e = &s.events[index];
        index += 1;
        if !wanted.is_empty() && !wanted.contains(&e.kind) || s.hidden {
            continue;
        }
        let targets: Vec<Value> = e
            .targets
            .iter()
            .map(
                |(id, kind)| json!({"id": id, "type": kind, "alternateId": id, "displayName": id, "detailEntry": null}),
            )
            .collect();
        body.push(json!({
            "uuid": e.uuid,
            "published": e.published.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "eventType": e.kind,
            "version": "0",
            "severity": "INFO",
            "displayMessage": e.kind,
            "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@example.com"},
            "outcome": {"result": "SUCCESS"},
            "target": targets,
        }));
    }
    let mut url = reqwest_url(&format!("{}/api/v1/logs", s.base));
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in q.iter().filter(|(k, _)| *k != "after") {
            pairs.append_pair(k, v);
        }
        pairs.append_pair("after", &format!("g{}-{index}", s.generation));
    }
    let mut headers = HeaderMap::new();
    headers.append("link", HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")).unwrap());
    (StatusCode::OK, headers, axum::Json(body)).into_response()
}

impl FakeDirectory for OktaFake {
    fn page_size(&self) -> usize {
        self.st.lock().unwrap().page_size
    }

    fn create_user(&self, user: &FakeUser) -> String {
        let now = self.clock.now();
        let mut s = self.st.lock().unwrap();
        let id = s.id("00u");
        let status = if user.active { "ACTIVE" } else { "DEPROVISIONED" };
        s.users.insert(
            id.clone(),
            FUser {
                login: user.user_name.clone(),
                first: user.given_name.clone(),
                last: user.family_name.clone(),
                status,
            },
        );
        s.event(now, "user.lifecycle.create", vec![(id.clone(), "User")]);
        if s.app {
            s.app_users.insert(id.clone());
            s.event(now, "application.user_membership.add", vec![(id.clone(), "User"), (APP_ID.into(), "AppInstance")]);
        }
        id
    }

    fn update_user(&self, id: &str, user: &FakeUser) {
        let now = self.clock.now();
        let mut s = self.st.lock().unwrap();
        let Some(u) = s.users.get_mut(id) else { return };
        let was_active = u.status != "DEPROVISIONED";
        u.login = user.user_name.clone();
        u.first = user.given_name.clone();
        u.last = user.family_name.clone();
        u.status = if user.active { "ACTIVE" } else { "DEPROVISIONED" };
        let kind = match (was_active, user.active) {
            (true, false) => "user.lifecycle.deactivate",
            (false, true) => "user.lifecycle.activate",
            _ => "user.account.update_profile",
        };
        s.event(now, kind, vec![(id.to_owned(), "User")]);
    }

    fn delete_user(&self, id: &str) {
        let now = self.clock.now();
        let mut s = self.st.lock().unwrap();
        s.users.remove(id);
        s.app_users.remove(id);
        for members in s.members.values_mut() {
            members.remove(id);
        }
        s.event(now, "user.lifecycle.deactivate", vec![(id.to_owned(), "User")]);
        s.event(now, "user.lifecycle.delete.initiated", vec![(id.to_owned(), "User")]);
    }

    fn create_group(&self, name: &str) -> String {
        let now = self.clock.now();
        let mut s = self.st.lock().unwrap();
        let id = s.id("00g");
        s.groups.insert(id.clone(), name.to_owned());
        s.members.insert(id.clone(), BTreeSet::new());
        s.event(now, "group.lifecycle.create", vec![(id.clone(), "UserGroup")]);
        if s.app {
            s.app_groups.insert(id.clone());
            s.event(
                now,
                "group.application_assignment.add",
                vec![(id.clone(), "UserGroup"), (APP_ID.into(), "AppInstance")],
            );
        }
        id
    }

    fn delete_group(&self, id: &str) {
        let now = self.clock.now();
        let mut s = self.st.lock().unwrap();
        s.groups.remove(id);
        s.members.remove(id);
        s.app_groups.remove(id);
        s.event(now, "group.lifecycle.delete", vec![(id.to_owned(), "UserGroup")]);
    }

    fn add_member(&self, group_id: &str, user_id: &str) {
        let now = self.clock.now();
        let mut s = self.st.lock().unwrap();
        s.members.entry(group_id.to_owned()).or_default().insert(user_id.to_owned());
        s.event(
            now,
            "group.user_membership.add",
            vec![(user_id.to_owned(), "User"), (group_id.to_owned(), "UserGroup")],
        );
    }

    fn remove_member(&self, group_id: &str, user_id: &str) {
        let now = self.clock.now();
        let mut s = self.st.lock().unwrap();
        if let Some(m) = s.members.get_mut(group_id) {
            m.remove(user_id);
        }
        s.event(
            now,
            "group.user_membership.remove",
            vec![(user_id.to_owned(), "User"), (group_id.to_owned(), "UserGroup")],
        );
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

    fn expire_cursors(&self) {
        self.st.lock().unwrap().generation += 1;
    }

    fn set_hidden(&self, hidden: bool) {
        self.st.lock().unwrap().hidden = hidden;
    }

    fn set_flakiness(&self, share: f64, seed: u64) {
        self.st.lock().unwrap().load.set_flakiness(share, seed);
    }

    fn flaky_tally(&self) -> FlakyTally {
        self.st.lock().unwrap().load.flaky_tally()
    }
}
