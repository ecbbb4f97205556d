//! A fake Microsoft Graph tenant for tests, bound to 127.0.0.1:0. Shapes
//! follow learn.microsoft.com/graph:
//! - `delta-query-users` / `delta-query-groups`: `GET /v1.0/users/delta` and
//!   `/v1.0/groups/delta` with `$select`; pages `{"@odata.context", "value",
//!   "@odata.nextLink"}` (a `$skiptoken`) and a last page with
//!   `"@odata.deltaLink"` (a `$deltatoken`); removed objects as
//!   `{"id", "@removed": {"reason": "changed"|"deleted"}}`; group members as
//!   `members@delta` entries `{"@odata.type": "#microsoft.graph.user", "id"}`
//!   (with `@removed` when gone), a large group repeated over several pages;
//! - `delta-query-overview`: an expired token answers 410 Gone with
//!   `syncStateNotFound`, and the client starts over;
//! - `throttling`: 429 `TooManyRequests` with `Retry-After` in seconds;
//! - `errors`: `{"error": {"code", "message", "innerError"}}`;
//! - `serviceprincipal-get`: `GET /v1.0/servicePrincipals/{id}`, 404
//!   `Request_ResourceNotFound` for an unknown id;
//! - `serviceprincipal-list-approleassignedto`: `GET
//!   /v1.0/servicePrincipals/{id}/appRoleAssignedTo`, a collection of
//!   appRoleAssignment `{"id", "deletedDateTime", "appRoleId",
//!   "createdDateTime", "principalDisplayName", "principalId",
//!   "principalType": "User"|"Group"|"ServicePrincipal", "resourceDisplayName",
//!   "resourceId"}` paged by `@odata.nextLink` (a `$skiptoken`);
//! - `group-get` and `group-list-members`: `GET /v1.0/groups/{id}` and
//!   `GET /v1.0/groups/{id}/members`, direct members only, each with its
//!   `@odata.type` (`#microsoft.graph.user`, ...), paged by `@odata.nextLink`;
//! - `json-batching`: `POST /v1.0/$batch` with `{"requests": [{"id", "method",
//!   "url"}]}` (at most 20, ids unique, `url` relative to the version),
//!   answered `{"responses": [{"id", "status", "headers", "body"}]}` in
//!   another order than asked (reversed here); each request goes through the
//!   same handlers and is throttled on its own (a 429 inside a 200 batch,
//!   with `Retry-After` in its `headers`); a malformed batch is a 400;
//! - `query-parameters` and `known-issues`: `$select` returns only the
//!   properties asked for (a user without `$select` has its default
//!   properties, which do not include `accountEnabled`); `$top` 1..999 (else
//!   400); `GET /v1.0/users?$filter=id in ('a','b')` with at most 15 values
//!   (else 400 `Request_UnsupportedQuery`); paging links keep the query;
//! - `throttling-limits` (identity and access): requests in flight are
//!   counted, so a test can hold a connector to its concurrency bound;
//! - identity platform `v2-oauth2-client-creds-grant-flow` and
//!   `certificate-credentials`: `POST /{tenant}/oauth2/v2.0/token`, secret or
//!   RS256 client assertion with `x5t`, `scope` = `{resource}/.default` of a
//!   resource the tenant has (Graph: `https://graph.microsoft.com` or its app
//!   id `00000003-0000-0000-c000-000000000000`), errors `{"error",
//!   "error_description", "error_codes", "timestamp", "trace_id",
//!   "correlation_id"}` (AADSTS1002012 for a scope without `/.default`,
//!   AADSTS500011 for an unknown resource).
//!
//! - `throttling-limits` (identity and access service limits): every answer
//!   carries `x-ms-resource-unit` (what the request cost); a 429 carries
//!   `Retry-After`, `x-ms-throttle-scope` and `x-ms-throttle-information`;
//!   `throttling`: a 503 may carry `Retry-After` too. Graph sends no
//!   remaining/reset headers for the directory.
//!
//! With [`EntraFake::start_at`] every route lives under a path prefix (a
//! proxy or gateway in front of Graph): `base` then includes it.
//! [`EntraFake::set_flakiness`] makes a share of the data requests fail (429
//! and 503 with `Retry-After: 1`, 500, a 2 s hang ending in 504).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::result_large_err,
    clippy::too_many_arguments,
    dead_code
)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use muster_connector::conformance::{FLAKY_HANG, Failure, FakeDirectory, FakeLoad, FakeUser, FlakyAnswer, FlakyTally};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const TENANT: &str = "contoso.onmicrosoft.com";
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_SECRET: &str = "s3cr3t~value";
pub const THUMBPRINT: &str = "0123456789ABCDEF0123456789ABCDEF01234567";
pub const RETRY_AFTER_SECS: u64 = 3;
/// The object id of the fake tenant's one enterprise application (its service principal).
pub const SERVICE_PRINCIPAL_ID: &str = "77777777-8888-4999-aaaa-bbbbbbbbbbbb";
/// The app role id Graph uses for "Default Access" (an app without app roles).
const DEFAULT_ACCESS_ROLE: &str = "00000000-0000-0000-0000-000000000000";
const PUBLIC_KEY: &str = include_str!("../test-key.pub.pem");
/// Microsoft Graph's resource: its application id URI and its application id.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// Graph's bound on `$top` for directory objects.
pub const MAX_TOP: usize = 999;
/// The properties Graph returns of a user without `$select` (v1.0 defaults that the fake holds).
const USER_DEFAULTS: [&str; 6] = ["id", "displayName", "givenName", "surname", "mail", "userPrincipalName"];

struct FUser {
    upn: String,
    given: String,
    surname: String,
    enabled: bool,
    version: u64,
    deleted: bool,
}

struct FGroup {
    name: String,
    version: u64,
    deleted: bool,
    members: BTreeSet<String>,
}

struct St {
    base: String,
    /// The page size when the request has no `$top`.
    page_size: usize,
    /// The largest page served whatever `$top` asks (Graph: 999; small in tests, so paging is exercised).
    max_page: usize,
    /// Resources whose `/.default` the token endpoint grants.
    resources: BTreeSet<String>,
    token_requests: usize,
    /// Sub-requests of `$batch`, as `GET /v1.0/...`.
    batch_items: Vec<String>,
    /// Failures answered by the next sub-requests of batches (not by whole HTTP requests).
    item_failures: VecDeque<Failure>,
    /// Delta rounds after the first carry changed users with only some
    /// properties (what `Prefer: return=minimal` answers).
    minimal_delta: bool,
    version: u64,
    next_id: u64,
    users: BTreeMap<String, FUser>,
    groups: BTreeMap<String, FGroup>,
    /// (version, group, user, added)
    member_log: Vec<(u64, String, String, bool)>,
    generation: u64,
    tokens: BTreeSet<String>,
    failures: VecDeque<Failure>,
    fail_after: Option<(usize, Failure)>,
    hidden: bool,
    requests: Vec<String>,
    /// principal id -> (principalType, assignment id), for the app's appRoleAssignedTo.
    assignments: BTreeMap<String, (&'static str, String)>,
    auto_assign_users: bool,
    auto_assign_groups: bool,
    /// The app registration lacks `Application.Read.All`: servicePrincipals answer 403.
    deny_applications: bool,
    /// Requests in flight, failures by status, flakiness, latency.
    load: FakeLoad,
}

#[derive(Clone)]
pub struct EntraFake {
    st: Arc<Mutex<St>>,
    pub base: String,
}

type Shared = Arc<Mutex<St>>;

impl EntraFake {
    /// A fake whose pages hold `page_size` entries, whatever `$top` asks.
    pub async fn start(page_size: usize) -> Self {
        Self::start_with(page_size, page_size, "").await
    }

    /// A fake whose routes live under `prefix` (`/graph`): a proxy in front of Graph.
    pub async fn start_at(page_size: usize, prefix: &str) -> Self {
        Self::start_with(page_size, page_size, prefix).await
    }

    /// A fake with Graph's own paging: `default_page` entries without `$top`,
    /// up to `max_page` with it.
    pub async fn start_paged(default_page: usize, max_page: usize) -> Self {
        Self::start_with(default_page, max_page, "").await
    }

    async fn start_with(page_size: usize, max_page: usize, prefix: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}{prefix}", listener.local_addr().unwrap());
        let st = Arc::new(Mutex::new(St {
            base: base.clone(),
            page_size,
            max_page: max_page.min(MAX_TOP),
            resources: BTreeSet::from([GRAPH_RESOURCE.to_owned(), GRAPH_APP_ID.to_owned()]),
            token_requests: 0,
            batch_items: Vec::new(),
            item_failures: VecDeque::new(),
            minimal_delta: false,
            version: 0,
            next_id: 0,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            member_log: Vec::new(),
            generation: 0,
            tokens: BTreeSet::new(),
            failures: VecDeque::new(),
            fail_after: None,
            hidden: false,
            requests: Vec::new(),
            assignments: BTreeMap::new(),
            auto_assign_users: false,
            auto_assign_groups: false,
            deny_applications: false,
            load: FakeLoad::default(),
        }));
        let api = Router::new()
            .route("/v1.0/users/delta", get(users_delta))
            .route("/v1.0/groups/delta", get(groups_delta))
            .route("/v1.0/users", get(list_users))
            .route("/v1.0/groups", get(list_top))
            .route("/v1.0/users/{id}", get(get_user))
            .route("/v1.0/groups/{id}", get(get_group))
            .route("/v1.0/groups/{id}/members", get(group_members))
            .route("/v1.0/servicePrincipals/{id}", get(get_service_principal))
            .route("/v1.0/servicePrincipals/{id}/appRoleAssignedTo", get(app_role_assigned_to))
            .with_state(st.clone());
        // A batch's requests run through the same handlers, each past its own gate.
        let items = api.clone().layer(middleware::from_fn_with_state(st.clone(), item_gate));
        let router = api
            .route("/{tenant}/oauth2/v2.0/token", post(token).with_state(st.clone()))
            .route("/v1.0/$batch", post(batch).with_state(BatchState { items }))
            .layer(middleware::from_fn_with_state(st.clone(), gate));
        let router = if prefix.is_empty() { router } else { Router::new().nest(prefix, router) };
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { st, base }
    }

    /// How many token requests reached the token endpoint.
    pub fn token_requests(&self) -> usize {
        self.st.lock().unwrap().token_requests
    }

    /// The sub-requests of every `$batch` so far (`GET /v1.0/...`).
    pub fn batch_items(&self) -> Vec<String> {
        self.st.lock().unwrap().batch_items.clone()
    }

    /// The most HTTP requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.st.lock().unwrap().load.max_in_flight()
    }

    /// The next sub-requests of batches answer these failures, one each (the
    /// batch itself answers 200, as Graph does).
    pub fn fail_next_in_batch(&self, failures: &[Failure]) {
        self.st.lock().unwrap().item_failures.extend(failures.iter().copied());
    }

    /// Changed users in later delta rounds carry only `id` and `displayName`
    /// (`Prefer: return=minimal`, user-delta): the connector must read the rest.
    pub fn set_minimal_delta(&self, minimal: bool) {
        self.st.lock().unwrap().minimal_delta = minimal;
    }

    /// The tenant's Graph is this resource instead (a national cloud:
    /// `https://graph.microsoft.us`); tokens are granted for its `/.default` only.
    pub fn set_graph_resource(&self, resource: &str) {
        self.st.lock().unwrap().resources = BTreeSet::from([resource.to_owned(), GRAPH_APP_ID.to_owned()]);
    }

    pub fn requests(&self) -> Vec<String> {
        self.st.lock().unwrap().requests.clone()
    }

    /// Assigns a user, a group, or (any other id) a client service principal
    /// to the app, as `POST /servicePrincipals/{id}/appRoleAssignedTo` would.
    pub fn assign(&self, principal_id: &str) {
        let mut s = self.st.lock().unwrap();
        s.assign(principal_id);
    }

    /// Removes the principal's assignment to the app.
    pub fn unassign(&self, principal_id: &str) {
        self.st.lock().unwrap().assignments.remove(principal_id);
    }

    /// Takes `Application.Read.All` away: `/servicePrincipals/...` answer 403
    /// `Authorization_RequestDenied`, as Graph does without the permission.
    pub fn deny_applications(&self, deny: bool) {
        self.st.lock().unwrap().deny_applications = deny;
    }

    /// The next request answers `status` (Graph's error body), with
    /// `Retry-After` when given.
    pub fn fail_next_status(&self, status: u16, retry_after: Option<u64>) {
        self.st.lock().unwrap().load.fail_next_status(status, retry_after);
    }

    /// Every data request takes this long to answer, so requests overlap.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.st.lock().unwrap().load.set_latency(latency);
    }

    /// Assigns every user and/or group created from now on to the app (for
    /// the conformance kit in app scope).
    pub fn set_auto_assign(&self, users: bool, groups: bool) {
        let mut s = self.st.lock().unwrap();
        s.auto_assign_users = users;
        s.auto_assign_groups = groups;
    }
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "innerError": {"date": "2026-01-01T00:00:00", "request-id": "r", "client-request-id": "c"}}});
    (status, axum::Json(body)).into_response()
}

/// Graph's 429 of the identity limits: `Retry-After` and the throttle headers.
fn too_many_requests(retry_after: u64) -> Response {
    let mut r = graph_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "Too many requests.");
    let h = r.headers_mut();
    h.insert("retry-after", HeaderValue::from_str(&retry_after.to_string()).unwrap());
    h.insert(
        "x-ms-throttle-scope",
        HeaderValue::from_str(&format!("Tenant_Application/Read/{TENANT}/{CLIENT_ID}")).unwrap(),
    );
    h.insert("x-ms-throttle-information", HeaderValue::from_static("ResourceUnitLimitExceeded"));
    r
}

/// A Graph error of `status`, with `Retry-After` when given.
fn status_error(status: u16, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code == StatusCode::TOO_MANY_REQUESTS {
        return too_many_requests(retry_after.unwrap_or(RETRY_AFTER_SECS));
    }
    let name = match status {
        500 => "generalException",
        503 => "serviceNotAvailable",
        504 => "gatewayTimeout",
        _ => "UnknownError",
    };
    let mut r = graph_error(code, name, code.canonical_reason().unwrap_or("Error."));
    if let Some(secs) = retry_after {
        r.headers_mut().insert("retry-after", HeaderValue::from_str(&secs.to_string()).unwrap());
    }
    r
}

fn failure(f: Failure, token_endpoint: bool) -> Response {
    match f {
        Failure::RateLimited => too_many_requests(RETRY_AFTER_SECS),
        Failure::ServerError => graph_error(StatusCode::SERVICE_UNAVAILABLE, "serviceNotAvailable", "Service unavailable."),
        Failure::Unauthorized if token_endpoint => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.", "error_codes": [7000215]})),
        )
            .into_response(),
        Failure::Unauthorized => {
            graph_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", "Access token validation failure.")
        }
    }
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
            return Admit::Answer(failure(f, token_endpoint));
        }
        if let Some((left, f)) = self.fail_after {
            if left == 0 {
                return Admit::Answer(failure(f, token_endpoint));
            }
            self.fail_after = Some((left - 1, f));
        }
        if let Some((status, retry_after)) = self.load.next_status() {
            return Admit::Answer(status_error(status, retry_after));
        }
        if !token_endpoint && let Some(answer) = self.load.next_flaky() {
            return match answer {
                FlakyAnswer::RateLimited => Admit::Answer(too_many_requests(1)),
                FlakyAnswer::ServerError => Admit::Answer(status_error(500, None)),
                // Graph's 503 says when to come back (throttling guidance).
                FlakyAnswer::Unavailable => Admit::Answer(status_error(503, Some(1))),
                FlakyAnswer::Hang => Admit::Hang,
            };
        }
        if !token_endpoint && !self.authorized(request.headers()) {
            return Admit::Answer(failure(Failure::Unauthorized, false));
        }
        Admit::Pass
    }
}

async fn gate(State(st): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let token_endpoint = path.ends_with("/oauth2/v2.0/token");
    let (admit, latency) = {
        let mut s = st.lock().unwrap();
        s.requests.push(format!("{} {}", request.method(), request.uri()));
        if token_endpoint {
            s.token_requests += 1;
        }
        s.load.arrive();
        (s.admit(&request, token_endpoint), s.load.latency())
    };
    let mut response = match admit {
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
    if !token_endpoint {
        // What the request cost against the identity limits; every GET of the fake costs 1.
        response.headers_mut().insert("x-ms-resource-unit", HeaderValue::from_static("1"));
    }
    response
}

/// The gate of one request inside a batch: its own failures and token check.
async fn item_gate(State(st): State<Shared>, request: Request, next: Next) -> Response {
    {
        let mut s = st.lock().unwrap();
        s.batch_items.push(format!("{} {}", request.method(), request.uri()));
        if let Some(f) = s.item_failures.pop_front() {
            return failure(f, false);
        }
        if !s.authorized(request.headers()) {
            return failure(Failure::Unauthorized, false);
        }
    }
    next.run(request).await
}

#[derive(Clone)]
struct BatchState {
    items: Router,
}

/// `POST /v1.0/$batch` (json-batching): each request through the same
/// handlers, the answers in another order than asked.
async fn batch(State(b): State<BatchState>, headers: HeaderMap, body: String) -> Response {
    let bad = |message: &str| graph_error(StatusCode::BAD_REQUEST, "BadRequest", message);
    let Ok(parsed) = serde_json::from_str::<Value>(&body) else { return bad("Invalid batch payload.") };
    let Some(requests) = parsed.get("requests").and_then(Value::as_array) else {
        return bad("Invalid batch payload format.");
    };
    if requests.is_empty() || requests.len() > 20 {
        return bad("The number of requests in a batch must be between 1 and 20.");
    }
    let ids: BTreeSet<String> = requests.iter().filter_map(|r| r["id"].as_str()).map(str::to_ascii_lowercase).collect();
    if ids.len() != requests.len() {
        return bad("Batch request ids must be unique.");
    }
    let mut responses = Vec::new();
    for r in requests {
        let (Some(id), Some(method), Some(url)) = (r["id"].as_str(), r["method"].as_str(), r["url"].as_str()) else {
            return bad("Each request needs an id, a method and a url.");
        };
        if !method.eq_ignore_ascii_case("GET") {
            responses.push(json!({"id": id, "status": 405, "headers": {"Content-Type": "application/json"},
                "body": {"error": {"code": "Request_BadRequest", "message": "Specified HTTP method is not allowed for the request target."}}}));
            continue;
        }
        let uri = format!("/v1.0{}{url}", if url.starts_with('/') { "" } else { "/" });
        let mut sub = Request::builder().method("GET").uri(uri);
        if let Some(auth) = headers.get("authorization") {
            sub = sub.header("authorization", auth);
        }
        let answer = b.items.clone().oneshot(sub.body(Body::empty()).unwrap()).await.unwrap();
        let status = answer.status().as_u16();
        let mut sub_headers = serde_json::Map::new();
        for (name, value) in answer.headers() {
            let name = match name.as_str() {
                "retry-after" => "Retry-After",
                "content-type" => "Content-Type",
                other => other,
            };
            sub_headers.insert(name.to_owned(), json!(value.to_str().unwrap_or("")));
        }
        let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        responses.push(json!({"id": id, "status": status, "headers": sub_headers, "body": body}));
    }
    // "Individual responses might appear in a different order than the requests."
    responses.reverse();
    axum::Json(json!({ "responses": responses })).into_response()
}

fn form(body: &str) -> HashMap<String, String> {
    muster_connector::http::Url::parse(&format!("http://x/?{body}")).unwrap().query_pairs().into_owned().collect()
}

/// An error of the identity platform: `{"error", "error_description",
/// "error_codes", "timestamp", "trace_id", "correlation_id", "error_uri"}`,
/// the description starting with its AADSTS code.
fn aadsts(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: 0f6d5b8a-1c2d-4e3f-9a8b-7c6d5e4f3a2b Correlation ID: 5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d Timestamp: 2026-01-01 00:00:00Z"),
        "error_codes": [code],
        "timestamp": "2026-01-01 00:00:00Z",
        "trace_id": "0f6d5b8a-1c2d-4e3f-9a8b-7c6d5e4f3a2b",
        "correlation_id": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, axum::Json(body)).into_response()
}

async fn token(State(st): State<Shared>, Path(tenant): Path<String>, body: String) -> Response {
    let f = form(&body);
    let err = |status: StatusCode, error: &str, description: &str| {
        let code = description.strip_prefix("AADSTS").and_then(|d| d.split(':').next()).and_then(|c| c.parse().ok());
        let text = description.split_once(": ").map(|(_, t)| t).unwrap_or(description);
        aadsts(status, error, code.unwrap_or(0), text)
    };
    if tenant != TENANT {
        return err(StatusCode::BAD_REQUEST, "invalid_request", "AADSTS90002: Tenant not found.");
    }
    let mut s = st.lock().unwrap();
    if f.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return err(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    // Client credentials take one `{resource}/.default` scope, of a resource the tenant has.
    let scope = f.get("scope").cloned().unwrap_or_default();
    let Some(resource) = scope.strip_suffix("/.default").filter(|r| !r.is_empty() && !r.contains(' ')) else {
        return aadsts(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    if !s.resources.contains(resource.trim_end_matches('/')) {
        return aadsts(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {TENANT}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        );
    }
    if let Some(secret) = f.get("client_secret") {
        if secret != CLIENT_SECRET {
            return err(StatusCode::UNAUTHORIZED, "invalid_client", "AADSTS7000215: Invalid client secret provided.");
        }
    } else {
        let assertion = f.get("client_assertion").cloned().unwrap_or_default();
        let header = jsonwebtoken::decode_header(&assertion);
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&[format!("{}/{TENANT}/oauth2/v2.0/token", s.base)]);
        v.set_issuer(&[CLIENT_ID]);
        let want_x5t = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hex::decode(THUMBPRINT).unwrap())
        };
        let ok = header.map(|h| h.x5t == Some(want_x5t)).unwrap_or(false)
            && jsonwebtoken::decode::<Value>(&assertion, &key, &v).is_ok();
        if !ok {
            return err(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS700027: Client assertion contains an invalid signature.",
            );
        }
    }
    let token = format!("eyJ0eXAi.graph.{}", s.tokens.len());
    s.tokens.insert(token.clone());
    axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
        .into_response()
}

impl St {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        auth.strip_prefix("Bearer ").is_some_and(|t| self.tokens.contains(t))
    }

    /// The page size `$top` asks for, within the fake's bounds; Graph refuses
    /// a `$top` outside 1..999.
    fn top(&self, q: &HashMap<String, String>) -> Result<usize, Response> {
        match q.get("$top").map(|t| t.parse::<usize>()) {
            None => Ok(self.page_size.max(1).min(self.max_page.max(1))),
            Some(Ok(n)) if (1..=MAX_TOP).contains(&n) => Ok(n.min(self.max_page.max(1))),
            Some(_) => Err(graph_error(
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                &format!("Invalid page size specified: '{}'. Must be between 1 and 999 inclusive.", q["$top"]),
            )),
        }
    }

    fn assign(&mut self, principal_id: &str) {
        let kind = if self.users.contains_key(principal_id) {
            "User"
        } else if self.groups.contains_key(principal_id) {
            "Group"
        } else {
            "ServicePrincipal"
        };
        let n = self.assignments.len() + 1;
        self.assignments
            .entry(principal_id.to_owned())
            .or_insert((kind, format!("assignment-{n:04}-of-{principal_id}")));
    }

    /// A plain (non-delta) collection page: `value` from `offset`, and an
    /// `@odata.nextLink` with `$skiptoken={offset}` (and the rest of the
    /// query, `$select` and `$top` included) while more remain.
    fn list_page(&self, path: &str, entity: &str, entries: Vec<Value>, q: &HashMap<String, String>) -> Response {
        let offset: usize = match q.get("$skiptoken").map(|t| t.parse()) {
            None => 0,
            Some(Ok(offset)) => offset,
            Some(Err(_)) => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid $skiptoken."),
        };
        let size = match self.top(q) {
            Ok(size) => size,
            Err(r) => return r,
        };
        let end = (offset + size).min(entries.len());
        let value: Vec<Value> = entries[offset.min(entries.len())..end].to_vec();
        let mut body = json!({"@odata.context": format!("{}/v1.0/$metadata#{entity}", self.base), "value": value});
        if end < entries.len() {
            let mut url = muster_connector::http::Url::parse(&format!("{}{path}", self.base)).unwrap();
            {
                let mut pairs = url.query_pairs_mut();
                for (k, v) in q.iter().filter(|(k, _)| k.as_str() != "$skiptoken").collect::<BTreeMap<_, _>>() {
                    pairs.append_pair(k, v);
                }
                pairs.append_pair("$skiptoken", &end.to_string());
            }
            body["@odata.nextLink"] = json!(url.as_str());
        }
        axum::Json(body).into_response()
    }

    fn live_group(&self, id: &str) -> Option<&FGroup> {
        self.groups.get(id).filter(|g| !g.deleted)
    }

    fn user_json(&self, id: &str, u: &FUser) -> Value {
        json!({
            "id": id,
            "userPrincipalName": u.upn,
            "mail": u.upn,
            "givenName": u.given,
            "surname": u.surname,
            "displayName": format!("{} {}", u.given, u.surname),
            "accountEnabled": u.enabled,
        })
    }

    /// Parses `{generation}:{since}:{upto}:{offset}` (skiptoken) or
    /// `{generation}:{upto}` (deltatoken); None when expired or malformed.
    fn position(&self, q: &HashMap<String, String>) -> Result<(u64, u64, usize), Response> {
        let expired = || graph_error(StatusCode::GONE, "syncStateNotFound", "The sync state generation is not found.");
        if let Some(skip) = q.get("$skiptoken") {
            let p: Vec<u64> = skip.split(':').filter_map(|x| x.parse().ok()).collect();
            if p.len() != 4 || p[0] != self.generation {
                return Err(expired());
            }
            return Ok((p[1], p[2], p[3] as usize));
        }
        if let Some(delta) = q.get("$deltatoken") {
            let p: Vec<u64> = delta.split(':').filter_map(|x| x.parse().ok()).collect();
            if p.len() != 2 || p[0] != self.generation {
                return Err(expired());
            }
            return Ok((p[1], self.version, 0));
        }
        Ok((0, self.version, 0))
    }

    fn respond(
        &self,
        path: &str,
        entity: &str,
        entries: Vec<Value>,
        since: u64,
        upto: u64,
        offset: usize,
        select: &str,
    ) -> Response {
        let end = (offset + self.page_size).min(entries.len());
        let value: Vec<Value> = entries[offset.min(entries.len())..end].to_vec();
        let mut body = json!({"@odata.context": format!("{}/v1.0/$metadata#{entity}", self.base), "value": value});
        let mut url = muster_connector::http::Url::parse(&format!("{}{path}", self.base)).unwrap();
        if end < entries.len() {
            url.query_pairs_mut().append_pair("$skiptoken", &format!("{}:{since}:{upto}:{end}", self.generation));
            body["@odata.nextLink"] = json!(url.as_str());
        } else {
            url.query_pairs_mut().append_pair("$deltatoken", &format!("{}:{upto}", self.generation));
            body["@odata.deltaLink"] = json!(url.as_str());
        }
        let _ = select;
        axum::Json(body).into_response()
    }
}

async fn users_delta(State(st): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = st.lock().unwrap();
    let (since, upto, offset) = match s.position(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    // Only the page's users are turned into JSON, so a listing of 10,000 stays quick;
    // the others are placeholders, as `respond` cuts the page out by position.
    let changed: Vec<(&String, &FUser)> = if s.hidden {
        Vec::new()
    } else {
        s.users.iter().filter(|(_, u)| u.version > since && u.version <= upto && (!u.deleted || since > 0)).collect()
    };
    let end = (offset + s.page_size).min(changed.len());
    let mut entries: Vec<Value> = vec![Value::Null; offset.min(changed.len())];
    for (id, u) in &changed[offset.min(changed.len())..end] {
        entries.push(if u.deleted {
            json!({"@odata.type": "#microsoft.graph.user", "id": id, "@removed": {"reason": "changed"}})
        } else if since > 0 && s.minimal_delta {
            json!({"id": id, "displayName": format!("{} {}", u.given, u.surname)})
        } else {
            s.user_json(id, u)
        });
    }
    entries.resize(changed.len(), Value::Null);
    s.respond("/v1.0/users/delta", "users", entries, since, upto, offset, "")
}

async fn groups_delta(State(st): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = st.lock().unwrap();
    let (since, upto, offset) = match s.position(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut entries = Vec::new();
    let chunk = s.page_size.max(1);
    if !s.hidden {
        for (id, g) in &s.groups {
            let head = |members: Vec<Value>| json!({"@odata.type": "#microsoft.graph.group", "id": id, "displayName": g.name, "description": format!("{} group", g.name), "members@delta": members});
            if since == 0 {
                if g.deleted || g.version > upto {
                    continue;
                }
                let members: Vec<Value> =
                    g.members.iter().map(|u| json!({"@odata.type": "#microsoft.graph.user", "id": u})).collect();
                if members.is_empty() {
                    entries.push(head(Vec::new()));
                }
                // A large group comes back over several entries (and pages).
                for part in members.chunks(chunk) {
                    entries.push(head(part.to_vec()));
                }
                continue;
            }
            if g.deleted {
                if g.version > since && g.version <= upto {
                    entries.push(
                        json!({"@odata.type": "#microsoft.graph.group", "id": id, "@removed": {"reason": "deleted"}}),
                    );
                }
                continue;
            }
            let mut last: BTreeMap<&String, bool> = BTreeMap::new();
            for (v, gid, uid, added) in &s.member_log {
                if gid == id && *v > since && *v <= upto {
                    last.insert(uid, *added);
                }
            }
            if g.version > since && g.version <= upto || !last.is_empty() {
                let members: Vec<Value> = last
                    .into_iter()
                    .map(|(uid, added)| {
                        if added {
                            json!({"@odata.type": "#microsoft.graph.user", "id": uid})
                        } else {
                            json!({"@odata.type": "#microsoft.graph.user", "id": uid, "@removed": {"reason": "deleted"}})
                        }
                    })
                    .collect();
                if members.is_empty() {
                    entries.push(head(Vec::new()));
                }
                for part in members.chunks(chunk) {
                    entries.push(head(part.to_vec()));
                }
            }
        }
    }
    s.respond("/v1.0/groups/delta", "groups", entries, since, upto, offset, "")
}

async fn list_top(State(_): State<Shared>) -> Response {
    axum::Json(json!({"value": []})).into_response()
}

/// Only the properties `$select` names (and `id` and `@odata.type`, always
/// returned), or `defaults` without `$select`.
fn project(mut value: Value, q: &HashMap<String, String>, defaults: &[&str]) -> Value {
    let selected: Vec<String> = match q.get("$select") {
        Some(list) => list.split(',').map(|p| p.trim().to_owned()).collect(),
        None => defaults.iter().map(|p| (*p).to_owned()).collect(),
    };
    if let Some(obj) = value.as_object_mut() {
        obj.retain(|k, _| k == "id" || k == "@odata.type" || selected.iter().any(|p| p == k));
    }
    value
}

/// The ids of `id in ('a','b')` or `id eq 'a'`; None for any other filter.
fn filtered_ids(filter: &str) -> Option<Vec<String>> {
    let f = filter.trim();
    let quoted = |t: &str| t.trim().strip_prefix('\'').and_then(|t| t.strip_suffix('\'')).map(|t| t.replace("''", "'"));
    if let Some(rest) = f.strip_prefix("id eq ") {
        return quoted(rest).map(|id| vec![id]);
    }
    let list = f.strip_prefix("id in")?.trim().strip_prefix('(')?.strip_suffix(')')?;
    list.split(',').map(quoted).collect()
}

/// `GET /v1.0/users`: the users, or with `$filter=id in (...)` those named
/// (up to 15 values, Graph "known issues"; more is refused as Graph does).
async fn list_users(State(st): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = st.lock().unwrap();
    let live =
        |id: &String| s.users.get(id).filter(|u| !u.deleted).map(|u| project(s.user_json(id, u), &q, &USER_DEFAULTS));
    let Some(filter) = q.get("$filter") else {
        let entries: Vec<Value> = if s.hidden { Vec::new() } else { s.users.keys().filter_map(live).collect() };
        return s.list_page("/v1.0/users", "users", entries, &q);
    };
    let Some(ids) = filtered_ids(filter) else {
        return graph_error(StatusCode::BAD_REQUEST, "Request_UnsupportedQuery", "Unsupported Query.");
    };
    if ids.len() > 15 {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            &format!(
                "Too many child clauses specified in search filter expression containing 'OR' operators: {}. Max allowed: 15.",
                ids.len()
            ),
        );
    }
    let entries: Vec<Value> = ids.iter().filter_map(live).collect();
    s.list_page("/v1.0/users", "users", entries, &q)
}

async fn get_user(
    State(st): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    match s.users.get(&id).filter(|u| !u.deleted) {
        Some(u) => axum::Json(project(s.user_json(&id, u), &q, &USER_DEFAULTS)).into_response(),
        None => graph_error(StatusCode::NOT_FOUND, "Request_ResourceNotFound", "Resource does not exist."),
    }
}

fn not_found(id: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
    )
}

async fn get_group(
    State(st): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    match s.live_group(&id) {
        Some(g) => {
            let group = json!({"id": id, "displayName": g.name, "description": format!("{} group", g.name), "mailEnabled": false, "securityEnabled": true});
            axum::Json(project(group, &q, &["id", "displayName", "description", "mailEnabled", "securityEnabled"]))
                .into_response()
        }
        None => not_found(&id),
    }
}

async fn group_members(
    State(st): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    let Some(g) = s.live_group(&id) else { return not_found(&id) };
    let members: Vec<Value> = g
        .members
        .iter()
        .filter_map(|uid| {
            if let Some(u) = s.users.get(uid).filter(|u| !u.deleted) {
                let mut m = s.user_json(uid, u);
                m["@odata.type"] = json!("#microsoft.graph.user");
                Some(project(m, &q, &USER_DEFAULTS))
            } else {
                // A nested group: listed, never expanded (direct members only).
                s.live_group(uid)
                    .map(|n| json!({"@odata.type": "#microsoft.graph.group", "id": uid, "displayName": n.name}))
            }
        })
        .collect();
    s.list_page(&format!("/v1.0/groups/{id}/members"), "directoryObjects", members, &q)
}

fn denied() -> Response {
    graph_error(
        StatusCode::FORBIDDEN,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

async fn get_service_principal(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    if st.lock().unwrap().deny_applications {
        return denied();
    }
    if id != SERVICE_PRINCIPAL_ID {
        return not_found(&id);
    }
    axum::Json(json!({
        "id": id,
        "appId": CLIENT_ID,
        "displayName": "Muster",
        "servicePrincipalType": "Application",
        "accountEnabled": true,
        "appRoleAssignmentRequired": true,
    }))
    .into_response()
}

async fn app_role_assigned_to(
    State(st): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    if s.deny_applications {
        return denied();
    }
    if id != SERVICE_PRINCIPAL_ID {
        return not_found(&id);
    }
    let mut entries = Vec::new();
    if !s.hidden {
        for (principal, (kind, assignment)) in &s.assignments {
            // A deleted user or group loses its assignments.
            let name = match *kind {
                "User" => s.users.get(principal).filter(|u| !u.deleted).map(|u| format!("{} {}", u.given, u.surname)),
                "Group" => s.live_group(principal).map(|g| g.name.clone()),
                _ => Some("client app".to_owned()),
            };
            let Some(name) = name else { continue };
            entries.push(json!({
                "id": assignment,
                "deletedDateTime": null,
                "appRoleId": DEFAULT_ACCESS_ROLE,
                "createdDateTime": "2026-01-01T00:00:00Z",
                "principalDisplayName": name,
                "principalId": principal,
                "principalType": kind,
                "resourceDisplayName": "Muster",
                "resourceId": SERVICE_PRINCIPAL_ID,
            }));
        }
    }
    s.list_page(
        &format!("/v1.0/servicePrincipals/{id}/appRoleAssignedTo"),
        &format!("servicePrincipals('{id}')/appRoleAssignedTo"),
        entries,
        &q,
    )
}

impl FakeDirectory for EntraFake {
    fn page_size(&self) -> usize {
        self.st.lock().unwrap().page_size
    }

    fn create_user(&self, user: &FakeUser) -> String {
        let mut s = self.st.lock().unwrap();
        s.next_id += 1;
        s.version += 1;
        let id = format!("{:08x}-aaaa-4bbb-8ccc-{:012x}", s.next_id, s.next_id);
        let version = s.version;
        s.users.insert(
            id.clone(),
            FUser {
                upn: user.user_name.clone(),
                given: user.given_name.clone(),
                surname: user.family_name.clone(),
                enabled: user.active,
                version,
                deleted: false,
            },
        );
        if s.auto_assign_users {
            s.assign(&id);
        }
        id
    }

    fn update_user(&self, id: &str, user: &FakeUser) {
        let mut s = self.st.lock().unwrap();
        s.version += 1;
        let version = s.version;
        if let Some(u) = s.users.get_mut(id) {
            u.upn = user.user_name.clone();
            u.given = user.given_name.clone();
            u.surname = user.family_name.clone();
            u.enabled = user.active;
            u.version = version;
        }
    }

    fn delete_user(&self, id: &str) {
        let mut s = self.st.lock().unwrap();
        s.version += 1;
        let version = s.version;
        if let Some(u) = s.users.get_mut(id) {
            u.deleted = true;
            u.version = version;
        }
        let groups: Vec<String> =
            s.groups.iter().filter(|(_, g)| g.members.contains(id)).map(|(k, _)| k.clone()).collect();
        for gid in groups {
            s.groups.get_mut(&gid).unwrap().members.remove(id);
            s.member_log.push((version, gid, id.to_owned(), false));
        }
    }

    fn create_group(&self, name: &str) -> String {
        let mut s = self.st.lock().unwrap();
        s.next_id += 1;
        s.version += 1;
        let id = format!("{:08x}-9999-4bbb-8ccc-{:012x}", s.next_id, s.next_id);
        let version = s.version;
        s.groups
            .insert(id.clone(), FGroup { name: name.to_owned(), version, deleted: false, members: BTreeSet::new() });
        if s.auto_assign_groups {
            s.assign(&id);
        }
        id
    }

    fn delete_group(&self, id: &str) {
        let mut s = self.st.lock().unwrap();
        s.version += 1;
        let version = s.version;
        if let Some(g) = s.groups.get_mut(id) {
            g.deleted = true;
            g.version = version;
            g.members.clear();
        }
    }

    fn add_member(&self, group_id: &str, user_id: &str) {
        let mut s = self.st.lock().unwrap();
        s.version += 1;
        let version = s.version;
        if let Some(g) = s.groups.get_mut(group_id) {
            g.members.insert(user_id.to_owned());
        }
        s.member_log.push((version, group_id.to_owned(), user_id.to_owned(), true));
    }

    fn remove_member(&self, group_id: &str, user_id: &str) {
        let mut s = self.st.lock().unwrap();
        s.version += 1;
        let version = s.version;
        if let Some(g) = s.groups.get_mut(group_id) {
            g.members.remove(user_id);
        }
        s.member_log.push((version, group_id.to_owned(), user_id.to_owned(), false));
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
