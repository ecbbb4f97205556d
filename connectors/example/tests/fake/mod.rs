//! A fake Example Directory API for tests, bound to 127.0.0.1:0. Example
//! Directory is made up; this file is its API reference:
//! - `GET /v1/users?limit=(1..500)&cursor=` → `{"data": [{"id", "login",
//!   "email", "given_name"?, "family_name"?, "display_name", "status":
//!   "active"|"suspended"|"deprovisioned"}], "next_cursor": "…"|null}`;
//!   a name the person does not have is left out;
//! - `GET /v1/groups?limit&cursor` → `{"data": [{"id", "name", "description"}], "next_cursor"}`;
//! - `GET /v1/groups/{id}/members?limit&cursor` → `{"data": [{"id", "type":
//!   "user"|"guest"}], "next_cursor"}`: a guest is an account of another
//!   tenant, which `/v1/users` does not list; 404 for an unknown group;
//! - cursors are opaque and keyset (a change between two pages shifts
//!   nothing); an expired or foreign one is 400 `invalid_cursor`;
//! - `Authorization: Bearer <token>` on every request, else 401
//!   `unauthenticated`; 429 `rate_limited` with `Retry-After` in seconds;
//!   503 `unavailable`; errors `{"error": {"code", "message"}}`.
//!
//! Only the routes and shapes live here. Failure injection, hiding, cursor
//! expiry, the request log, paging and the credential gate are the kit's
//! (`muster_connector::conformance::FakeControls`, `muster_connector::fake::serve`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use muster_connector::conformance::{
    Failure, FakeControls, FakeDeployment, FakeDirectory, FakeUser, Listing, PageError, Paging,
};
use muster_connector::fake::VendorGate;
use muster_connector::{ConnectorSpec, ManualClock};
use serde_json::{Value, json};

/// The token the fake accepts.
pub const TOKEN: &str = "exd_live_0f1e2d3c4b5a69788796a5b4";
/// What the fake's 429 asks to wait.
pub const RETRY_AFTER_SECS: u64 = 7;

struct FUser {
    login: String,
    given: String,
    family: String,
    status: &'static str,
}

#[derive(Default)]
struct St {
    next_id: u64,
    users: BTreeMap<String, FUser>,
    groups: BTreeMap<String, String>,
    /// Group id to member ids (users and guests).
    members: BTreeMap<String, BTreeSet<String>>,
    guests: BTreeSet<String>,
}

/// How the fake is started.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Every route under this path (a proxy in front of the API).
    pub prefix: String,
    /// Keyset, as the API documents; offset to prove the kit catches a
    /// connector over an offset-paged API that trusts a shifted listing.
    pub paging: Paging,
    /// Off only to prove the kit refuses a fake that never checks credentials.
    pub checks_credentials: bool,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self { prefix: String::new(), paging: Paging::Keyset, checks_credentials: true }
    }
}

#[derive(Clone)]
pub struct ExampleFake {
    st: Arc<Mutex<St>>,
    controls: Arc<FakeControls>,
    page_size: usize,
    pub base: String,
}

#[derive(Clone)]
struct Shared {
    st: Arc<Mutex<St>>,
    controls: Arc<FakeControls>,
    page_size: usize,
    paging: Paging,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn failure(failure: Failure, _path: &str) -> Response {
    match failure {
        Failure::RateLimited => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests, slow down");
            r.headers_mut().insert("retry-after", HeaderValue::from_str(&RETRY_AFTER_SECS.to_string()).unwrap());
            r
        }
        Failure::ServerError => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later"),
        Failure::Unauthorized => error(StatusCode::UNAUTHORIZED, "unauthenticated", "the token is not valid"),
    }
}

impl ExampleFake {
    pub async fn start(page_size: usize) -> Self {
        Self::start_with(page_size, FakeOptions::default()).await
    }

    pub async fn start_with(page_size: usize, options: FakeOptions) -> Self {
        let st = Arc::new(Mutex::new(St::default()));
        let controls = Arc::new(FakeControls::new());
        let shared = Shared { st: st.clone(), controls: controls.clone(), page_size, paging: options.paging };
        let routes = Router::new()
            .route("/v1/users", get(list_users))
            .route("/v1/groups", get(list_groups))
            .route("/v1/groups/{id}/members", get(list_members))
            .with_state(shared);
        let checks = options.checks_credentials;
        let gate = VendorGate {
            open_paths: Vec::new(),
            authorized: Arc::new(move |headers: &HeaderMap| {
                !checks
                    || headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some(format!("Bearer {TOKEN}").as_str())
            }),
            refusal: Arc::new(|| error(StatusCode::UNAUTHORIZED, "unauthenticated", "the token is not valid")),
            failure: Arc::new(failure),
        };
        let base = muster_connector::fake::serve(routes, controls.clone(), gate, &options.prefix).await.unwrap();
        Self { st, controls, page_size, base }
    }

    /// Every request received, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.controls.requests()
    }
}

fn page_answer(
    shared: &Shared,
    listing: Listing,
    scope: &str,
    items: Vec<(String, Value)>,
    q: &HashMap<String, String>,
) -> Response {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=500).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "invalid_argument", "limit must be 1 to 500"),
    };
    let cursor = q.get("cursor").map(String::as_str);
    match shared.controls.page(listing, scope, items, cursor, limit.min(shared.page_size), shared.paging) {
        Ok(page) => axum::Json(json!({"data": page.items, "next_cursor": page.next})).into_response(),
        Err(PageError::Expired) => error(StatusCode::BAD_REQUEST, "invalid_cursor", "the cursor has expired"),
        Err(PageError::Invalid) => error(StatusCode::BAD_REQUEST, "invalid_cursor", "the cursor is not valid"),
    }
}

fn user_json(id: &str, u: &FUser) -> Value {
    let mut v = json!({"id": id, "login": u.login, "email": u.login, "status": u.status});
    if !u.given.is_empty() {
        v["given_name"] = json!(u.given);
    }
    if !u.family.is_empty() {
        v["family_name"] = json!(u.family);
    }
    v["display_name"] = json!(format!("{} {}", u.given, u.family).trim());
    v
}

async fn list_users(State(shared): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let items = {
        let st = shared.st.lock().unwrap();
        st.users.iter().map(|(id, u)| (id.clone(), user_json(id, u))).collect()
    };
    page_answer(&shared, Listing::Users, "users", items, &q)
}

async fn list_groups(State(shared): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let items = {
        let st = shared.st.lock().unwrap();
        st.groups
            .iter()
            .map(|(id, name)| (id.clone(), json!({"id": id, "name": name, "description": format!("{name} group")})))
            .collect()
    };
    page_answer(&shared, Listing::Groups, "groups", items, &q)
}

async fn list_members(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items = {
        let st = shared.st.lock().unwrap();
        let Some(members) = st.members.get(&id) else {
            return error(StatusCode::NOT_FOUND, "not_found", &format!("no group {id}"));
        };
        members
            .iter()
            .map(|m| {
                let kind = if st.guests.contains(m) { "guest" } else { "user" };
                (m.clone(), json!({"id": m, "type": kind}))
            })
            .collect()
    };
    page_answer(&shared, Listing::Members, &format!("members/{id}"), items, &q)
}

impl FakeDirectory for ExampleFake {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn create_user(&self, user: &FakeUser) -> String {
        let mut st = self.st.lock().unwrap();
        st.next_id += 1;
        let id = format!("u{:06}", st.next_id);
        let status = if user.active { "active" } else { "suspended" };
        st.users.insert(
            id.clone(),
            FUser {
                login: user.user_name.clone(),
                given: user.given_name.clone(),
                family: user.family_name.clone(),
                status,
            },
        );
        id
    }

    fn update_user(&self, id: &str, user: &FakeUser) {
        let mut st = self.st.lock().unwrap();
        if let Some(u) = st.users.get_mut(id) {
            u.login = user.user_name.clone();
            u.given = user.given_name.clone();
            u.family = user.family_name.clone();
            u.status = if user.active { "active" } else { "suspended" };
        }
    }

    fn delete_user(&self, id: &str) {
        let mut st = self.st.lock().unwrap();
        st.users.remove(id);
        for members in st.members.values_mut() {
            members.remove(id);
        }
    }

    fn create_group(&self, name: &str) -> String {
        let mut st = self.st.lock().unwrap();
        st.next_id += 1;
        let id = format!("g{:06}", st.next_id);
        st.groups.insert(id.clone(), name.to_owned());
        st.members.insert(id.clone(), BTreeSet::new());
        id
    }

    fn delete_group(&self, id: &str) {
        let mut st = self.st.lock().unwrap();
        st.groups.remove(id);
        st.members.remove(id);
    }

    fn add_member(&self, group_id: &str, user_id: &str) {
        self.st.lock().unwrap().members.entry(group_id.to_owned()).or_default().insert(user_id.to_owned());
    }

    fn remove_member(&self, group_id: &str, user_id: &str) {
        if let Some(m) = self.st.lock().unwrap().members.get_mut(group_id) {
            m.remove(user_id);
        }
    }

    fn controls(&self) -> Option<&FakeControls> {
        Some(&self.controls)
    }

    fn add_outside_member(&self, group_id: &str) -> Option<String> {
        let mut st = self.st.lock().unwrap();
        st.next_id += 1;
        let id = format!("guest{:06}", st.next_id);
        st.guests.insert(id.clone());
        st.members.entry(group_id.to_owned()).or_default().insert(id.clone());
        Some(id)
    }
}

/// The fake and a directory config pointing at it, its token in a file: the
/// one line the end-to-end suite registers (`tests/e2e/pull.rs`).
pub async fn deployment(_clock: Arc<ManualClock>) -> FakeDeployment {
    let fake = ExampleFake::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("example-token");
    std::fs::write(&token, TOKEN).unwrap();
    let config = json!({"base_url": fake.base, "token": {"file": token}, "page_size": 2});
    FakeDeployment { kind: muster_connector_example::Example::KIND, fake: Arc::new(fake), config, keep: Box::new(dir) }
}
