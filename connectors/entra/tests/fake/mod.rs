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
//! - identity platform `v2-oauth2-client-creds-grant-flow` and
//!   `certificate-credentials`: `POST /{tenant}/oauth2/v2.0/token`, secret or
//!   RS256 client assertion with `x5t`, errors `{"error", "error_description"}` (AADSTS codes).

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
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use muster_connector::conformance::{Failure, FakeDirectory, FakeUser};
use serde_json::{Value, json};

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
    page_size: usize,
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
}

#[derive(Clone)]
pub struct EntraFake {
    st: Arc<Mutex<St>>,
    pub base: String,
}

type Shared = Arc<Mutex<St>>;

impl EntraFake {
    pub async fn start(page_size: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let st = Arc::new(Mutex::new(St {
            base: base.clone(),
            page_size,
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
        }));
        let router = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/v1.0/users/delta", get(users_delta))
            .route("/v1.0/groups/delta", get(groups_delta))
            .route("/v1.0/users", get(list_top))
            .route("/v1.0/groups", get(list_top))
            .route("/v1.0/users/{id}", get(get_user))
            .route("/v1.0/groups/{id}", get(get_group))
            .route("/v1.0/groups/{id}/members", get(group_members))
            .route("/v1.0/servicePrincipals/{id}", get(get_service_principal))
            .route("/v1.0/servicePrincipals/{id}/appRoleAssignedTo", get(app_role_assigned_to))
            .layer(middleware::from_fn_with_state(st.clone(), gate))
            .with_state(st.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { st, base }
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

fn failure(f: Failure, token_endpoint: bool) -> Response {
    match f {
        Failure::RateLimited => {
            let mut r = graph_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "Too many requests.");
            r.headers_mut().insert("retry-after", HeaderValue::from_str(&RETRY_AFTER_SECS.to_string()).unwrap());
            r
        }
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

async fn gate(State(st): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let token_endpoint = path.ends_with("/oauth2/v2.0/token");
    {
        let mut s = st.lock().unwrap();
        s.requests.push(format!("{} {}", request.method(), request.uri()));
        if let Some(f) = s.failures.pop_front() {
            return failure(f, token_endpoint);
        }
        if let Some((left, f)) = s.fail_after {
            if left == 0 {
                return failure(f, token_endpoint);
            }
            s.fail_after = Some((left - 1, f));
        }
        if !token_endpoint {
            let auth = request.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !auth.strip_prefix("Bearer ").is_some_and(|t| s.tokens.contains(t)) {
                return failure(Failure::Unauthorized, false);
            }
        }
    }
    next.run(request).await
}

fn form(body: &str) -> HashMap<String, String> {
    muster_connector::http::Url::parse(&format!("http://x/?{body}")).unwrap().query_pairs().into_owned().collect()
}

async fn token(State(st): State<Shared>, Path(tenant): Path<String>, body: String) -> Response {
    let f = form(&body);
    let err = |status: StatusCode, error: &str, description: &str| {
        (status, axum::Json(json!({"error": error, "error_description": description}))).into_response()
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
    if f.get("scope") != Some(&format!("{}/.default", s.base)) {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
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
    /// `@odata.nextLink` with `$skiptoken={offset}` while more remain.
    fn list_page(&self, path: &str, entity: &str, entries: Vec<Value>, q: &HashMap<String, String>) -> Response {
        let offset: usize = match q.get("$skiptoken").map(|t| t.parse()) {
            None => 0,
            Some(Ok(offset)) => offset,
            Some(Err(_)) => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid $skiptoken."),
        };
        let end = (offset + self.page_size.max(1)).min(entries.len());
        let value: Vec<Value> = entries[offset.min(entries.len())..end].to_vec();
        let mut body = json!({"@odata.context": format!("{}/v1.0/$metadata#{entity}", self.base), "value": value});
        if end < entries.len() {
            let mut url = muster_connector::http::Url::parse(&format!("{}{path}", self.base)).unwrap();
            url.query_pairs_mut().append_pair("$skiptoken", &end.to_string());
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
    let mut entries = Vec::new();
    if !s.hidden {
        for (id, u) in &s.users {
            if u.version <= since || u.version > upto {
                continue;
            }
            if u.deleted {
                if since > 0 {
                    entries.push(
                        json!({"@odata.type": "#microsoft.graph.user", "id": id, "@removed": {"reason": "changed"}}),
                    );
                }
            } else {
                entries.push(s.user_json(id, u));
            }
        }
    }
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

async fn get_user(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let s = st.lock().unwrap();
    match s.users.get(&id).filter(|u| !u.deleted) {
        Some(u) => axum::Json(s.user_json(&id, u)).into_response(),
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

async fn get_group(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let s = st.lock().unwrap();
    match s.live_group(&id) {
        Some(g) => axum::Json(json!({"id": id, "displayName": g.name, "description": format!("{} group", g.name)}))
            .into_response(),
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
                Some(m)
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
}
